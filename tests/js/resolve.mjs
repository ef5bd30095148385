// Resolves one SMART Health Link with the third-party `kill-the-clipboard` SHLViewer and prints the
// outcome as one JSON line. Input (stdin, JSON): {link, recipient, passcode?, embeddedLengthMax?}.
// Used by tests/emergency/test_kill_the_clipboard.py against our server on 127.0.0.1.
import { SHLViewer } from 'kill-the-clipboard';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));

try {
  const viewer = new SHLViewer({ shlinkURI: input.link });
  const params = { recipient: input.recipient };
  if (input.passcode !== undefined) params.passcode = input.passcode;
  if (input.embeddedLengthMax !== undefined) params.embeddedLengthMax = input.embeddedLengthMax;
  const resolved = await viewer.resolveSHL(params);
  process.stdout.write(JSON.stringify({ ok: true, fhirResources: resolved.fhirResources }) + '\n');
} catch (error) {
  process.stdout.write(
    JSON.stringify({ ok: false, error: error?.constructor?.name ?? 'Error', message: String(error?.message ?? error) }) +
      '\n',
  );
}
