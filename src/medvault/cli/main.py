"""`medvault` command line. Every command takes --data-dir; errors are one readable line, exit 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medvault import logs
from medvault.config import Settings, load_settings
from medvault.db import make_engine, make_sessionmaker
from medvault.errors import MedvaultError
from medvault.store import migrate

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="medvault: an encrypted FHIR R4 health record vault."
)
keys_app = typer.Typer(no_args_is_help=True, help="Key management.")
app.add_typer(keys_app, name="keys")
user_app = typer.Typer(no_args_is_help=True, help="Accounts: patients, clinicians, researchers, officers, admins.")
app.add_typer(user_app, name="user")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident access log.")
app.add_typer(audit_app, name="audit")
apps_app = typer.Typer(no_args_is_help=True, help="SMART apps (OAuth2 clients).")
app.add_typer(apps_app, name="app")
emergency_app = typer.Typer(no_args_is_help=True, help="Emergency cards (SMART Health Links).")
app.add_typer(emergency_app, name="emergency")
token_app = typer.Typer(no_args_is_help=True, help="Operator (system) tokens for bulk work over the API.")
app.add_typer(token_app, name="token")
console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (env MEDVAULT_DATA_DIR).")]
DbUrl = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL (env MEDVAULT_DATABASE_URL).")]
KeyDir = Annotated[Path | None, typer.Option("--key-dir", help="Key directory (env MEDVAULT_KEY_DIR).")]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """One line on stderr and exit 1 for any failure; never a traceback (it could quote data)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedvaultError as exc:
            err_console.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback to the terminal
            logs.get("cli").error("unexpected error: %s", exc.__class__.__name__)
            err_console.print(
                f"[red]error:[/red] unexpected {exc.__class__.__name__}; see the log in the data directory"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings_for(data_dir: Path | None, database_url: str | None, key_dir: Path | None, **extra: Any) -> Settings:
    return load_settings(data_dir=data_dir, database_url=database_url, key_dir=key_dir, **extra)


@app.command()
@friendly
def init(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
    expected_patients: Annotated[int | None, typer.Option(help="Planned patients (sizes the blind indexes).")] = None,
) -> None:
    """Create the data directory, keys (0600), the operator token and the database schema."""
    from medvault.store.setup import initialise

    settings = settings_for(data_dir, database_url, key_dir, expected_patients=expected_patients)
    logs.setup(settings.log_path)
    result = initialise(settings)
    console.print(f"data directory: {settings.data_dir.resolve()}")
    console.print(f"keys: {settings.keys_path} ({'created' if result.created_keys else 'already there'})")
    state = "issued" if result.created_token else "already there"
    console.print(f"operator token (system/*.cruds, stored hashed): {settings.token_path} ({state})")
    console.print(f"blind index width: {result.blind_bits} bits")


def _open(settings: Settings) -> tuple[Any, Any, Any]:
    from medvault.db import make_engine, make_sessionmaker
    from medvault.store import migrate
    from medvault.store.crypto_context import build_crypto

    engine = make_engine(settings)
    migrate.upgrade(engine, keys_path=settings.keys_path)
    factory = make_sessionmaker(engine)
    with factory() as session:
        crypto = build_crypto(settings, session)
    return engine, factory, crypto


def run_import(settings: Settings, paths: list[Path], *, show: bool = True, synthetic: int = 0) -> Any:
    from medvault.records.importer import Importer, ImportReport, find_files

    files = find_files(paths)
    engine, factory, crypto = _open(settings)
    try:
        importer = Importer(factory, crypto)
        with Progress(
            TextColumn("[bold]import"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[resources]} resources"),
            TimeElapsedColumn(),
            console=console,
            disable=not show,
        ) as progress:
            task = progress.add_task("import", total=len(files), resources=0)
            stored = 0

            def on_file(_path: Path, n: int) -> None:
                nonlocal stored
                stored += n
                progress.update(task, advance=1, resources=stored)

            if synthetic:
                import orjson

                from medvault.demo_data import synthetic_bundles

                report = ImportReport()
                progress.update(task, total=synthetic)
                for i, bundle in enumerate(synthetic_bundles(synthetic)):
                    before = report.stored
                    importer.import_bytes(f"synthetic-{i}", orjson.dumps(bundle), report)
                    on_file(Path(), report.stored - before)
            else:
                report = importer.run(files, on_file=on_file)
    finally:
        engine.dispose()
    return report


def print_report(report: Any) -> None:
    table = Table(title="import")
    for col in ("type", "created", "updated", "unchanged"):
        table.add_column(col, justify="right" if col != "type" else "left")
    types = sorted(set(report.created) | set(report.updated) | set(report.unchanged))
    for t in types:
        table.add_row(t, str(report.created[t]), str(report.updated[t]), str(report.unchanged[t]))
    table.add_row(
        "[bold]total",
        str(sum(report.created.values())),
        str(sum(report.updated.values())),
        str(sum(report.unchanged.values())),
    )
    console.print(table)
    if report.rejected:
        # Positions, not file names: Synthea-style exports name files after their patients.
        console.print(
            f"[yellow]{len(report.rejected)} rejected[/yellow] "
            "(files numbered in import order: arguments in order, folders sorted by path):"
        )
        for r in report.rejected:
            where = f" at {r.location}" if r.location else ""
            console.print(f"  {r.label}{where}: {r.reason}", highlight=False, markup=False)
    else:
        console.print("0 rejected")


@app.command("import")
@friendly
def import_(
    paths: Annotated[list[Path], typer.Argument(help="FHIR files or folders (Bundles, resources, NDJSON).")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Import FHIR Bundles / resources / NDJSON (files or folders) into the vault."""
    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    report = run_import(settings, paths)
    print_report(report)
    logs.get("cli").info("import: %d files, %d stored, %d rejected", report.files, report.stored, len(report.rejected))
    if report.rejected and not report.stored and not sum(report.unchanged.values()):
        raise typer.Exit(1)


@app.command()
@friendly
def serve(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (one per core uses every core; default 1).")
    ] = 1,
) -> None:
    """Serve the FHIR API, the pages and the SMART Health Links endpoints."""
    settings = settings_for(data_dir, database_url, key_dir)
    _serve(settings, host, port, workers=workers)


def _serve(settings: Settings, host: str, port: int, *, workers: int = 1) -> None:
    import os

    import uvicorn

    from medvault.api.app import create_app

    # access_log off: uvicorn's access log prints query strings, which can hold names or birth dates.
    # proxy_headers off: client addresses feed sign-in throttling and the access log: never take
    # them from X-Forwarded-For unless a trusted proxy is configured (not yet an option).
    options: dict[str, Any] = {"host": host, "port": port, "access_log": False, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(create_app(settings), proxy_headers=False, **options)
        return
    # Several processes: each builds its app from the same settings, passed by environment (the
    # only channel uvicorn's workers have), and logs to its own medvault.<pid>.log. Migrations run
    # here before any worker starts, so each worker's own upgrade finds nothing to do.
    engine = make_engine(settings)
    try:
        migrate.upgrade(engine, keys_path=settings.keys_path)
    finally:
        engine.dispose()
    os.environ.update(
        {
            "MEDVAULT_DATA_DIR": str(settings.data_dir),
            "MEDVAULT_KEY_DIR": str(settings.keys_path),
            "MEDVAULT_ENVIRONMENT": settings.environment,
        }
    )
    if settings.database_url:
        os.environ["MEDVAULT_DATABASE_URL"] = settings.database_url
    uvicorn.run(
        "medvault.api.app:create_app_from_environment", factory=True, workers=workers, proxy_headers=False, **options
    )


@keys_app.command("rotate")
@friendly
def keys_rotate(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
    batch: Annotated[int, typer.Option(help="Data keys re-wrapped per transaction.")] = 200,
    keep_old: Annotated[bool, typer.Option(help="Leave replaced KEKs in the key directory.")] = False,
) -> None:
    """Re-wrap every data key under new key-encryption keys (online; resumes after a crash)."""
    from medvault.store.rotation import rotate

    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    with Progress(
        TextColumn("[bold]rotate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("rotate", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = rotate(settings, batch=batch, on_progress=on_progress, retire=not keep_old)
    if report.resumed:
        console.print("resumed an interrupted rotation")
    for purpose, kid in report.new_kids.items():
        console.print(f"{purpose}: active key {kid}")
    console.print(f"re-wrapped {report.rewrapped} data keys")
    for kid in report.retired:
        console.print(f"retired {kid} (moved to {settings.keys_path / 'retired'}; destroy it once no backup needs it)")
    logs.get("cli").info("keys rotate: %d data keys re-wrapped", report.rewrapped)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return password


@user_app.command("create")
@friendly
def user_create(
    login: Annotated[str, typer.Option("--login", help="Login name (e.g. an e-mail address).")],
    role: Annotated[str, typer.Option("--role", help="patient, clinician, researcher, privacy-officer or admin.")],
    patient: Annotated[str | None, typer.Option("--patient", help="Patient id (patient accounts).")] = None,
    practitioner: Annotated[
        str | None, typer.Option("--practitioner", help="Practitioner id (clinician accounts).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Create an account (the password is prompted for, never taken as an argument)."""
    from datetime import UTC, datetime

    from medvault.auth import accounts
    from medvault.auth.passwords import Hasher
    from medvault.db import unit_of_work

    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    password = _read_password(password_stdin)
    engine, factory, crypto = _open(settings)
    try:
        with unit_of_work(factory) as session:
            account_id = accounts.create_account(
                session=session,
                crypto=crypto,
                hasher=Hasher(),
                login=login,
                password=password,
                role=role,
                now=datetime.now(UTC),
                patient_id=patient,
                practitioner_id=practitioner,
            )
    finally:
        engine.dispose()
    console.print(f"created {role} account {account_id}", highlight=False)
    if role in accounts.MFA_REQUIRED:
        console.print("an authenticator app (TOTP) must be set up at first sign-in")
    logs.get("cli").info("user create: %s account %s", role, account_id)


@user_app.command("list")
@friendly
def user_list(data_dir: DataDir = None, database_url: DbUrl = None, key_dir: KeyDir = None) -> None:
    """List accounts with their role and state."""
    from medvault.auth import accounts

    settings = settings_for(data_dir, database_url, key_dir)
    engine, factory, crypto = _open(settings)
    try:
        with factory() as session:
            rows = accounts.list_accounts(session=session, crypto=crypto)
    finally:
        engine.dispose()
    table = Table(title="accounts")
    for col in ("login", "role", "state", "second factor", "linked to"):
        table.add_column(col, overflow="fold")  # ids are copied from here: never cut them short
    for a in rows:
        state = "disabled" if a.disabled else "locked" if a.locked else "active"
        link = (
            f"Patient/{a.patient_id}"
            if a.patient_id
            else f"Practitioner/{a.practitioner_id}"
            if a.practitioner_id
            else ""
        )
        table.add_row(escape(a.login), a.role, state, "TOTP" if a.mfa_enrolled else "-", link)
    console.print(table)


def _account_change(
    login: str,
    settings: Settings,
    change: Callable[..., str],
    *,
    done: str,
    command: str,
    end_app_tokens: bool = False,
) -> None:
    """One account change in one transaction, then one line on the terminal and one in the log
    (the account id only, never the login name: it may be an e-mail address). `end_app_tokens`:
    the account's SMART app tokens are revoked in the same transaction."""
    from medvault.db import unit_of_work
    from medvault.smart import tokens

    logs.setup(settings.log_path)
    engine, factory, crypto = _open(settings)
    try:
        with unit_of_work(factory) as session:
            account_id = change(session=session, crypto=crypto, login=login)
            if end_app_tokens:
                tokens.revoke_account(session=session, crypto=crypto, account_id=account_id, now=tokens.utcnow())
    finally:
        engine.dispose()
    console.print(done.format(account_id=account_id))
    logs.get("cli").info("user %s: account %s", command, account_id)


@user_app.command("disable")
@friendly
def user_disable(
    login: Annotated[str, typer.Argument(help="Login name.")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Disable an account; its sessions and its apps' tokens end at once."""
    from medvault.auth import accounts

    change = functools.partial(accounts.set_disabled, disabled=True)
    settings = settings_for(data_dir, database_url, key_dir)
    done = "disabled account {account_id}"
    _account_change(login, settings, change, done=done, command="disable", end_app_tokens=True)


@user_app.command("enable")
@friendly
def user_enable(
    login: Annotated[str, typer.Argument(help="Login name.")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Re-enable an account, also lifting a lock after 100 failed sign-ins."""
    from medvault.auth import accounts

    change = functools.partial(accounts.set_disabled, disabled=False)
    settings = settings_for(data_dir, database_url, key_dir)
    _account_change(login, settings, change, done="enabled account {account_id}", command="enable")


@user_app.command("reset-mfa")
@friendly
def user_reset_mfa(
    login: Annotated[str, typer.Argument(help="Login name.")],
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Forget the account's authenticator and recovery codes; it enrols again at next sign-in."""
    from medvault.auth import accounts

    settings = settings_for(data_dir, database_url, key_dir)
    done = "second factor reset for account {account_id}; its sessions and app tokens have ended"
    _account_change(login, settings, accounts.reset_mfa, done=done, command="reset-mfa", end_app_tokens=True)


@audit_app.command("checkpoint")
@friendly
def audit_checkpoint(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here (must not exist yet); default: standard output.")
    ] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Sign the log's current size and Merkle root. Keep the output where the server cannot write."""
    from medvault.audit import log as audit_log
    from medvault.crypto.signing import load_private

    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    private = load_private(settings.keys_path)
    engine = make_engine(settings)
    try:
        migrate.upgrade(engine, keys_path=settings.keys_path)
        with make_sessionmaker(engine, write=False)() as session:
            text = audit_log.make_checkpoint(session=session, private_key=private, origin="medvault")
    finally:
        engine.dispose()
    if out is None:
        sys.stdout.write(text)
    else:
        try:
            with out.open("x", encoding="utf-8") as f:  # an export is never overwritten
                f.write(text)
        except FileExistsError:
            raise MedvaultError(f"{out} already exists; checkpoints are never overwritten") from None
        except OSError as exc:
            raise MedvaultError(f"cannot write {out}: {exc.strerror}") from None
        console.print(f"checkpoint of {text.splitlines()[1]} entries written to {out}", highlight=False)
    logs.get("cli").info("audit checkpoint: %s entries", text.splitlines()[1])


@audit_app.command("verify")
@friendly
def audit_verify(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint exported earlier.")],
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="audit-signing.pub (default: the key directory's).")
    ] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Check the stored log against an exported checkpoint: any edit, deletion, reordering,
    insertion or truncation of the entries it covers is reported. Needs no decryption key."""
    from medvault.audit import log as audit_log
    from medvault.crypto.signing import load_public

    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    public = load_public(public_key or settings.keys_path)
    try:
        text = checkpoint.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise MedvaultError(f"cannot read the checkpoint {checkpoint}") from None
    engine = make_engine(settings)
    try:
        if not migrate.is_current(engine):
            raise MedvaultError("this database has no current schema: run `medvault init` on it first")
        with make_sessionmaker(engine, write=False)() as session:
            report = audit_log.verify(session=session, checkpoint_text=text, public_key=public)
    finally:
        engine.dispose()
    logs.get("cli").info("audit verify: %d entries, %d problems", report.checked, len(report.problems))
    if report.ok:
        console.print(
            f"log verified: {report.size} entries, the first {report.checkpoint_size} match the checkpoint; "
            f"root {report.root.hex()}",
            highlight=False,
        )
        return
    for problem in report.problems:
        err_console.print(f"[red]TAMPERED:[/red] {problem}", highlight=False)
    raise typer.Exit(1)


@app.command()
@friendly
def demo(
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    source: Annotated[Path | None, typer.Option(help="FHIR data to load (default: ../shared Synthea set).")] = None,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the server afterwards.")] = True,
) -> None:
    """A ready-to-explore instance: init, import synthetic patients, serve on 127.0.0.1:8000."""
    from medvault.demo_data import default_source, ensure_demo_clinician_account, ensure_demo_patient_account
    from medvault.store.setup import initialise

    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    initialise(settings)
    src = source or default_source()
    if src is None:
        # Generated in memory and imported directly: no plaintext copy ever touches the disk.
        console.print("../shared not found: generating 100 synthetic patients")
        report = run_import(settings, [], synthetic=100)
    else:
        console.print(f"importing {src if src.is_dir() else 'one file'}", highlight=False)
        report = run_import(settings, [src])
    print_report(report)
    token = settings.token_path.read_text().strip()
    url = f"http://{host}:{port}"
    console.print(
        f"\n[bold]medvault is ready[/bold] — FHIR API at {url}/fhir (CapabilityStatement: {url}/fhir/metadata)"
    )
    console.print(f"operator token (also in {settings.token_path}):\n  {token}")
    console.print(f'try:  curl -H "Authorization: Bearer {token}" "{url}/fhir/Patient?_count=5"')
    login, password = ensure_demo_patient_account(settings)
    console.print(f"\npatient sign-in at {url}/login (see who accessed the record):\n  login     {login}")
    if password:
        console.print(f"  password  {password}  (shown once; only its hash is stored)", highlight=False)
    else:
        console.print("  password  as printed when this data directory was first set up")
    clinician = ensure_demo_clinician_account(settings)
    console.print(
        f"\nclinician sign-in at {url}/login (the demo patient shares their record; see {url}/patients):"
        f"\n  login     {clinician.login}",
        highlight=False,
    )
    if clinician.password and clinician.totp_secret:
        console.print(f"  password  {clinician.password}  (shown once; only its hash is stored)", highlight=False)
        console.print(
            f"  authenticator key  {clinician.totp_secret}  (add it to an authenticator app; shown once)"
            f"\n  or its otpauth URI {clinician.totp_uri}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print("  password and authenticator key as printed when this data directory was first set up")
    if serve_after:
        _serve(settings, host, port)


@apps_app.command("register")
@friendly
def app_register(
    name: Annotated[str, typer.Option("--name", help="The app's name, as shown to the person approving it.")],
    redirect_uri: Annotated[
        list[str], typer.Option("--redirect-uri", help="A redirect URI (exact match; repeat for several).")
    ],
    confidential: Annotated[
        bool, typer.Option("--confidential", help="A server-side app that keeps a client secret.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Register a SMART app; prints its client_id (and, for a confidential app, its secret, once)."""
    from datetime import UTC, datetime

    from medvault.db import unit_of_work
    from medvault.smart import tokens

    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    engine, factory, _crypto = _open(settings)
    try:
        with unit_of_work(factory) as session:
            client_id, secret = tokens.register_client(
                session=session, name=name, redirect_uris=redirect_uri, confidential=confidential, now=datetime.now(UTC)
            )
    finally:
        engine.dispose()
    console.print(f"client_id: {client_id}", highlight=False)
    if secret:
        console.print(f"client_secret: {secret}  (shown once; only its hash is stored)", highlight=False)
    logs.get("cli").info("app register: %s", client_id)


@apps_app.command("list")
@friendly
def app_list(data_dir: DataDir = None, database_url: DbUrl = None, key_dir: KeyDir = None) -> None:
    """List registered SMART apps."""
    from medvault.smart import tokens

    settings = settings_for(data_dir, database_url, key_dir)
    engine, factory, _crypto = _open(settings)
    try:
        with factory() as session:
            rows = tokens.list_clients(session=session)
    finally:
        engine.dispose()
    table = Table(title="apps")
    for col in ("client_id", "name", "type", "redirect URIs"):
        table.add_column(col, overflow="fold")
    for a in rows:
        kind = "confidential" if a.confidential else "public"
        table.add_row(a.client_id, escape(a.name), kind, escape(" ".join(a.redirect_uris)))
    console.print(table)


@token_app.command("issue")
@friendly
def token_issue(
    system: Annotated[bool, typer.Option("--system", help="An operator token with scope system/*.cruds.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Revoke every earlier operator token first.")] = False,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Issue an operator token for bulk work (admin only: whoever runs this holds the keys). It is
    stored hashed, written 0600 to the data directory's token file, and printed once."""
    from datetime import UTC, datetime

    from medvault.db import unit_of_work
    from medvault.smart import tokens
    from medvault.store.setup import write_token_file

    if not system:
        raise MedvaultError("only operator tokens are issued here (--system); apps get theirs through SMART")
    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    engine, factory, crypto = _open(settings)
    try:
        with unit_of_work(factory) as session:
            now = datetime.now(UTC)
            revoked = tokens.revoke_system_tokens(session=session, crypto=crypto, now=now) if replace else 0
            token = tokens.issue_system_token(session=session, crypto=crypto, now=now)
            write_token_file(settings.token_path, token)
    finally:
        engine.dispose()
    if revoked:
        console.print(f"revoked {revoked} earlier operator token(s)")
    console.print(f"operator token (also written to {settings.token_path}):\n  {token}", highlight=False)
    logs.get("cli").info("token issue: system token (replace=%s)", replace)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


@emergency_app.command("read")
@friendly
def emergency_read(
    file: Annotated[Path, typer.Argument(help="An IPS document (FHIR JSON) from any system.", show_default=False)],
) -> None:
    """Show what an International Patient Summary holds, section by section, and where it breaks
    FHIR rules. A document that breaks rules is still shown: its allergies matter more than its
    formatting. Nothing is stored."""
    from medvault.emergency import ips
    from medvault.fhir.errors import FhirError

    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise FhirError(f"cannot read {file.name}: {exc.strerror or exc.__class__.__name__}") from None
    loaded = ips.load(raw)
    console.print(f"[bold]{escape(loaded.resource_type)}[/bold] ({loaded.kind})", highlight=False)
    for section in loaded.sections:
        code = f" [{section.code}]" if section.code else ""
        console.print(f"\n[bold]{escape(section.title)}[/bold]{escape(code)}", highlight=False)
        for item in section.items:
            console.print(f"  - {escape(item)}", highlight=False)
        if not section.items:
            console.print(f"  ({escape(section.empty_reason or 'no entries')})", highlight=False)
    if loaded.conformant:
        console.print("\nconforms to FHIR R4 (base rules)")
    else:
        console.print(f"\n[yellow]{len(loaded.conformance)} FHIR rule(s) broken[/yellow] (shown anyway):")
        for finding in loaded.conformance:
            console.print(f"  - {escape(finding)}", highlight=False)


@emergency_app.command("card")
@friendly
def emergency_card(
    patient: Annotated[str, typer.Option("--patient", help="Patient id.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the QR, wallet card and flash-drive files.")] = Path(
        "."
    ),
    base_url: Annotated[
        str, typer.Option("--base-url", envvar="MEDVAULT_PUBLIC_URL", help="The server's public https address.")
    ] = "http://127.0.0.1:8000",
    label: Annotated[str | None, typer.Option("--label", help="Card label (only when a new link is made).")] = None,
    alert: Annotated[
        list[str] | None, typer.Option("--alert", help="An alert for the summary and the card (new link only).")
    ] = None,
    data_dir: DataDir = None,
    database_url: DbUrl = None,
    key_dir: KeyDir = None,
) -> None:
    """Write the emergency card's files (making the patient's emergency link if there is none) and
    print the link. The files are a bearer copy of the summary: keep them as safe as the card."""
    import os

    from medvault.emergency import links
    from medvault.emergency.card import LINK_FILE
    from medvault.fhir.types import is_fhir_id
    from medvault.records.guard import OPERATOR_CLI

    if not is_fhir_id(patient):
        raise links.LinkError("--patient must be a FHIR id")
    settings = settings_for(data_dir, database_url, key_dir)
    logs.setup(settings.log_path)
    engine, factory, crypto = _open(settings)
    try:
        files = links.emergency_card(
            factory=factory,
            crypto=crypto,
            caller=OPERATOR_CLI,
            patient_id=patient,
            base_url=base_url.rstrip("/"),
            label=label,
            alerts=tuple(alert or ()),
        )
    finally:
        engine.dispose()
    out.mkdir(parents=True, exist_ok=True)
    written = [("emergency-card.pdf", files.wallet_pdf), *((f.name, f.content) for f in files.drive)]
    for name, content in written:
        path = out / name
        # 0600 like the keys: each file opens the summary without any other secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
    state = "new emergency link" if files.created else "existing emergency link"
    console.print(f"{state}; wrote {', '.join(n for n, _ in written)} to {out.resolve()}")
    console.print(f"link (also in {LINK_FILE}; it opens the summary, share it as you would the card):")
    # Plain print, not rich: the link must come out on one line, unwrapped and unstyled.
    print(files.viewer_link)
