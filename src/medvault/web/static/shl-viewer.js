// medvault responder viewer for SMART Health Links (HL7 SMART Health Cards and Links v1.0.0).
//
// One script, two pages:
// * the online viewer (/shl/view#shlink:/...): reads the link from the URL fragment, POSTs the
//   manifest with the responder's stated role, downloads each file and decrypts it here;
// * the offline emergency.html on a flash drive: the same script inlined, decrypting the embedded
//   JWE once the person pastes the link or its key.
//
// The key never leaves this page: it is read from the fragment (which browsers never send), used only
// as a WebCrypto key, and never put in a request, URL, storage or log. Decryption is AES-256-GCM by
// WebCrypto; `zip: DEF` is inflated by the browser's DecompressionStream("deflate-raw"). Record text
// is only ever inserted as text nodes (narratives are rebuilt from a tag allow-list, no attributes).
"use strict";

(() => {
  const SHLINK = "shlink:/";
  const KEY_RE = /^[A-Za-z0-9_-]{43}$/;
  const B64URL_RE = /^[A-Za-z0-9_-]*$/;
  const MAX_JWE_CHARS = 8 * 1024 * 1024;
  const MAX_PLAINTEXT = 8 * 1024 * 1024;
  const RECIPIENT_KEY = "medvault-shl-recipient";
  const LOINC = "http://loinc.org";
  // Responders read alerts first, then allergies, problems, medications, contacts; the rest after.
  const SECTION_PRIORITY = [
    LOINC + "|104605-1", // alerts
    LOINC + "|48765-2", // allergies and intolerances
    LOINC + "|11450-4", // problems
    LOINC + "|10160-0", // medications
    "urn:medvault:emergency-section|emergency-contacts",
  ];
  const ALERTS = SECTION_PRIORITY[0];
  const ALLOWED_TAGS = new Set([
    "div", "p", "span", "b", "strong", "i", "em", "br", "ul", "ol", "li",
    "table", "thead", "tbody", "tr", "th", "td", "h3", "h4", "h5", "h6",
  ]);
  const DROPPED_TAGS = new Set(["script", "style", "img", "iframe", "object", "embed", "svg", "math", "template"]);

  class ShlViewerError extends Error {}

  // ---- encoding helpers --------------------------------------------------------------------------

  function b64urlDecode(text) {
    if (!B64URL_RE.test(text) || text.length % 4 === 1) throw new ShlViewerError("not base64url");
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
    return out;
  }

  const utf8 = new TextDecoder("utf-8", { fatal: true });

  // ---- the link ----------------------------------------------------------------------------------

  /** Parse `shlink:/...`, `https://viewer#shlink:/...`, or a bare 43-character key (offline page). */
  function parseShlink(text, { allowBareKey = false } = {}) {
    let t = String(text || "").trim();
    if (allowBareKey && KEY_RE.test(t)) return { key: t, flag: "", url: null };
    const at = t.indexOf("#" + SHLINK);
    if (at >= 0) t = t.slice(at + 1);
    if (!t.startsWith(SHLINK)) throw new ShlViewerError("This is not an emergency link (it must contain shlink:/).");
    let payload;
    try {
      payload = JSON.parse(utf8.decode(b64urlDecode(t.slice(SHLINK.length))));
    } catch (_e) {
      throw new ShlViewerError("This emergency link is damaged and cannot be read.");
    }
    if (!payload || typeof payload !== "object" || typeof payload.url !== "string" || typeof payload.key !== "string" ||
        !KEY_RE.test(payload.key)) {
      throw new ShlViewerError("This emergency link is damaged and cannot be read.");
    }
    const flag = typeof payload.flag === "string" ? payload.flag : "";
    if (flag.includes("P") && flag.includes("U")) throw new ShlViewerError("This emergency link is damaged and cannot be read.");
    return {
      url: payload.url,
      key: payload.key,
      flag,
      exp: Number.isInteger(payload.exp) ? payload.exp : null,
      label: typeof payload.label === "string" ? payload.label : null,
    };
  }

  // ---- the file ----------------------------------------------------------------------------------

  async function inflateRaw(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    const reader = stream.getReader();
    const chunks = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > MAX_PLAINTEXT) {
        await reader.cancel();
        throw new ShlViewerError("The summary is too large to show.");
      }
      chunks.push(value);
    }
    const out = new Uint8Array(total);
    let offset = 0;
    for (const c of chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }

  /** Decrypt a compact JWE (`dir`, `A256GCM`, optional `zip: DEF`) with the link's 32-byte key. */
  async function decryptJwe(compact, keyText) {
    const token = String(compact).trim();
    if (token.length > MAX_JWE_CHARS) throw new ShlViewerError("The summary file is too large.");
    const parts = token.split(".");
    if (parts.length !== 5 || parts[1] !== "") throw new ShlViewerError("The summary file is not in the expected format.");
    let header;
    try {
      header = JSON.parse(utf8.decode(b64urlDecode(parts[0])));
    } catch (_e) {
      throw new ShlViewerError("The summary file is not in the expected format.");
    }
    if (!header || header.alg !== "dir" || header.enc !== "A256GCM" || (header.zip !== undefined && header.zip !== "DEF")) {
      throw new ShlViewerError("The summary file uses an encryption this viewer does not support.");
    }
    const iv = b64urlDecode(parts[2]);
    const ciphertext = b64urlDecode(parts[3]);
    const tag = b64urlDecode(parts[4]);
    const sealed = new Uint8Array(ciphertext.length + tag.length);
    sealed.set(ciphertext, 0);
    sealed.set(tag, ciphertext.length);
    const key = await crypto.subtle.importKey("raw", b64urlDecode(keyText), { name: "AES-GCM" }, false, ["decrypt"]);
    let plain;
    try {
      plain = new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(parts[0]), tagLength: 128 }, key, sealed,
      ));
    } catch (_e) {
      throw new ShlViewerError("The summary could not be decrypted: the key does not match this file.");
    }
    if (header.zip === "DEF") plain = await inflateRaw(plain);
    if (plain.length > MAX_PLAINTEXT) throw new ShlViewerError("The summary is too large to show.");
    return { cty: typeof header.cty === "string" ? header.cty : null, plaintext: plain };
  }

  // ---- rendering ---------------------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  /** Rebuild a narrative from an allow-list of tags, text only, no attributes: nothing can run. */
  function safeNarrative(xhtml) {
    const doc = new DOMParser().parseFromString(String(xhtml), "text/html");
    const copy = (src, dst) => {
      for (const child of src.childNodes) {
        if (child.nodeType === Node.TEXT_NODE) {
          dst.appendChild(document.createTextNode(child.nodeValue));
        } else if (child.nodeType === Node.ELEMENT_NODE) {
          const tag = child.localName;
          if (DROPPED_TAGS.has(tag)) continue;
          if (ALLOWED_TAGS.has(tag)) {
            const made = document.createElement(tag);
            copy(child, made);
            dst.appendChild(made);
          } else {
            copy(child, dst);
          }
        }
      }
    };
    const out = document.createElement("div");
    out.className = "shl-narrative";
    copy(doc.body, out);
    return out;
  }

  function codeKey(concept) {
    const c = concept && Array.isArray(concept.coding) ? concept.coding[0] : null;
    return c && typeof c.system === "string" && typeof c.code === "string" ? c.system + "|" + c.code : "";
  }

  function conceptText(concept) {
    if (!concept || typeof concept !== "object") return "";
    if (typeof concept.text === "string" && concept.text) return concept.text;
    for (const c of Array.isArray(concept.coding) ? concept.coding : []) {
      if (c && typeof c.display === "string" && c.display) return c.display;
    }
    return "";
  }

  function humanName(names) {
    for (const n of Array.isArray(names) ? names : []) {
      if (!n || typeof n !== "object") continue;
      if (typeof n.text === "string" && n.text.trim()) return n.text;
      const given = Array.isArray(n.given) ? n.given.filter((g) => typeof g === "string") : [];
      const full = [...given, typeof n.family === "string" ? n.family : ""].join(" ").trim();
      if (full) return full;
    }
    return "";
  }

  /** Fallback for a section without a narrative: one line per entry, from the entry's own codes. */
  function entryLines(section, byUrl) {
    const list = el("ul");
    for (const entry of Array.isArray(section.entry) ? section.entry : []) {
      const res = entry && byUrl.get(entry.reference);
      if (!res) continue;
      const text = conceptText(res.code) || conceptText(res.medicationCodeableConcept) || conceptText(res.vaccineCode) ||
        humanName(res.name) || res.resourceType;
      list.appendChild(el("li", text));
    }
    return list;
  }

  function renderBundle(bundle, target) {
    target.replaceChildren();
    if (!bundle || bundle.resourceType !== "Bundle" || !Array.isArray(bundle.entry)) {
      target.appendChild(el("p", "The shared file is not a patient summary.", "shl-error"));
      return;
    }
    const byUrl = new Map();
    for (const e of bundle.entry) if (e && typeof e.fullUrl === "string" && e.resource) byUrl.set(e.fullUrl, e.resource);
    const composition = bundle.entry[0] && bundle.entry[0].resource;
    if (!composition || composition.resourceType !== "Composition") {
      target.appendChild(el("p", "The shared file is not a patient summary.", "shl-error"));
      return;
    }
    const patient = composition.subject && byUrl.get(composition.subject.reference);
    if (patient) {
      const head = el("section", null, "shl-patient");
      head.appendChild(el("h2", humanName(patient.name) || "Patient"));
      const facts = [];
      if (typeof patient.birthDate === "string") facts.push("Born " + patient.birthDate);
      if (typeof patient.gender === "string") facts.push(patient.gender);
      if (facts.length) head.appendChild(el("p", facts.join(" \u00b7 ")));
      target.appendChild(head);
    }
    const sections = (Array.isArray(composition.section) ? composition.section : []).map((s, i) => {
      const rank = SECTION_PRIORITY.indexOf(codeKey(s.code));
      return { s, order: rank >= 0 ? rank : SECTION_PRIORITY.length + i };
    });
    sections.sort((a, b) => a.order - b.order);
    for (const { s } of sections) {
      const isAlerts = codeKey(s.code) === ALERTS;
      const box = el("section", null, isAlerts ? "shl-section shl-alerts" : "shl-section");
      box.appendChild(el("h2", typeof s.title === "string" && s.title ? s.title : conceptText(s.code) || "Section"));
      if (s.text && typeof s.text.div === "string") {
        box.appendChild(safeNarrative(s.text.div));
      } else if (Array.isArray(s.entry) && s.entry.length) {
        box.appendChild(entryLines(s, byUrl));
      } else {
        box.appendChild(el("p", "No information available."));
      }
      target.appendChild(box);
    }
    if (typeof composition.date === "string") {
      target.appendChild(el("p", "Summary made " + composition.date.replace("T", " ").slice(0, 16) + " UTC.", "shl-hint"));
    }
  }

  function renderFile(file, target) {
    let obj;
    try {
      obj = JSON.parse(utf8.decode(file.plaintext));
    } catch (_e) {
      throw new ShlViewerError("The shared file could not be read.");
    }
    renderBundle(obj, target);
  }

  // ---- pages -------------------------------------------------------------------------------------

  function status(message, kind) {
    const node = document.getElementById("shl-status");
    if (!node) return;
    node.textContent = message;
    node.className = "shl-status" + (kind ? " shl-" + kind : "");
  }

  async function fetchOrFail(url, init) {
    try {
      // credentials omitted and no referrer: a responder's request carries nothing but what we send.
      return await fetch(url, { ...init, credentials: "omit", referrerPolicy: "no-referrer", cache: "no-store", redirect: "error" });
    } catch (_e) {
      throw new ShlViewerError("Network failure: the link's server could not be reached. Check the connection and try again.");
    }
  }

  function unavailable() {
    return new ShlViewerError("This link was revoked or has expired. Ask the patient for a new one; clinicians can use emergency access.");
  }

  async function readManifest(link, recipient, passcode) {
    const body = { recipient };
    if (link.flag.includes("P")) body.passcode = passcode;
    const resp = await fetchOrFail(link.url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
    });
    if (resp.status === 404) throw unavailable();
    if (resp.status === 401) {
      let remaining = null;
      try {
        const obj = await resp.json();
        if (Number.isInteger(obj.remainingAttempts)) remaining = obj.remainingAttempts;
      } catch (_e) {
        remaining = null;
      }
      const err = new ShlViewerError(
        "Wrong passcode." + (remaining === null ? "" : " " + remaining + " attempt" + (remaining === 1 ? "" : "s") + " remaining."),
      );
      err.passcode = true;
      throw err;
    }
    if (!resp.ok) throw new ShlViewerError("The link's server could not answer (status " + resp.status + "). Try again shortly.");
    let manifest;
    try {
      manifest = await resp.json();
    } catch (_e) {
      throw new ShlViewerError("The link's server sent an unreadable answer.");
    }
    if (!manifest || !Array.isArray(manifest.files) || manifest.files.length === 0) {
      throw new ShlViewerError("The link's server shared no files.");
    }
    return manifest.files;
  }

  class LocationGone extends ShlViewerError {}

  async function fileText(entry) {
    if (typeof entry.embedded === "string") return entry.embedded;
    if (typeof entry.location !== "string") throw new ShlViewerError("The link's server sent an unreadable answer.");
    const resp = await fetchOrFail(entry.location, { method: "GET", headers: { accept: "application/jose" } });
    if (resp.status === 404) throw new LocationGone("A file's download address had expired.");
    if (!resp.ok) throw new ShlViewerError("A file could not be downloaded (status " + resp.status + ").");
    return resp.text();
  }

  async function manifestTokens(link, recipient, passcode) {
    const files = await readManifest(link, recipient, passcode);
    const fhir = files.filter((f) => f && f.contentType === "application/fhir+json");
    if (!fhir.length) throw new ShlViewerError("The link holds no patient summary this viewer can show.");
    return Promise.all(fhir.map(fileText));
  }

  async function openLink(link, recipient, passcode, target) {
    let tokens;
    if (link.flag.includes("U")) {
      const url = new URL(link.url);
      url.searchParams.set("recipient", recipient);
      const resp = await fetchOrFail(url.href, { method: "GET", headers: { accept: "application/jose" } });
      if (resp.status === 404) throw unavailable();
      if (!resp.ok) throw new ShlViewerError("The link's server could not answer (status " + resp.status + ").");
      tokens = [await resp.text()];
    } else {
      try {
        tokens = await manifestTokens(link, recipient, passcode);
      } catch (e) {
        // A location is short-lived and single-use: the spec has receivers ask the manifest again.
        if (!(e instanceof LocationGone)) throw e;
        tokens = await manifestTokens(link, recipient, passcode);
      }
    }
    target.replaceChildren();
    for (const token of tokens) {
      const file = await decryptJwe(token, link.key);
      const holder = el("div", null, "shl-file");
      target.appendChild(holder);
      renderFile(file, holder);
    }
    addPrintButton(target);
  }

  function addPrintButton(target) {
    const button = el("button", "Print this summary", "shl-print");
    button.type = "button";
    button.addEventListener("click", () => window.print());
    target.prepend(button);
  }

  function startOnline(app) {
    const form = document.getElementById("shl-start-form");
    const recipientInput = document.getElementById("shl-recipient");
    const passBox = document.getElementById("shl-passcode-box");
    const passInput = document.getElementById("shl-passcode");
    const target = document.getElementById("shl-summary");
    let link;
    try {
      link = parseShlink(location.hash.slice(1));
    } catch (e) {
      status(e instanceof ShlViewerError ? e.message : "This emergency link cannot be read.", "error");
      if (form) form.hidden = true;
      return;
    }
    const labelNode = document.getElementById("shl-label");
    if (labelNode && link.label) labelNode.textContent = link.label;
    if (link.exp !== null && link.exp * 1000 < Date.now()) {
      status(unavailable().message, "error");
      form.hidden = true;
      return;
    }
    const needsPasscode = link.flag.includes("P");
    passBox.hidden = !needsPasscode;
    passInput.required = needsPasscode;
    let remembered = null;
    try {
      remembered = sessionStorage.getItem(RECIPIENT_KEY);
    } catch (_e) {
      remembered = null;
    }
    if (remembered) recipientInput.value = remembered;
    let busy = false;
    const go = async () => {
      const recipient = recipientInput.value.trim();
      if (!recipient || busy) return;
      busy = true;
      try {
        sessionStorage.setItem(RECIPIENT_KEY, recipient);
      } catch (_e) {
        // private mode: the responder types it again next time
      }
      status("Opening the summary\u2026", "busy");
      try {
        await openLink(link, recipient, passInput.value, target);
        form.hidden = true;
        status("", null);
      } catch (e) {
        status(e instanceof ShlViewerError ? e.message : "The summary could not be shown.", "error");
        if (e && e.passcode) {
          passInput.value = "";
          passInput.focus();
        }
      } finally {
        busy = false;
      }
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      go();
    });
    // A responder who already said who they are (this tab) gets the summary without another tap.
    if (remembered && !needsPasscode) go();
    app.dataset.shlReady = "1";
  }

  function startOffline(app) {
    const form = document.getElementById("shl-key-form");
    const input = document.getElementById("shl-key");
    const target = document.getElementById("shl-summary");
    const holder = document.getElementById("shl-offline-jwe");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      status("Decrypting\u2026", "busy");
      try {
        const link = parseShlink(input.value, { allowBareKey: true });
        const file = await decryptJwe(holder.textContent, link.key);
        renderFile(file, target);
        addPrintButton(target);
        input.value = "";
        form.hidden = true;
        for (const intro of document.querySelectorAll(".shl-intro")) intro.hidden = true;
        status("", null);
      } catch (e) {
        status(e instanceof ShlViewerError ? e.message : "The summary could not be shown.", "error");
      }
    });
    app.dataset.shlReady = "1";
  }

  function start() {
    const app = document.getElementById("shl-app");
    if (!app) return;
    let config = {};
    try {
      config = JSON.parse(app.dataset.shlConfig || "{}");
    } catch (_e) {
      config = {};
    }
    if (config.mode === "offline") {
      startOffline(app);
    } else {
      // Another link opened in this tab changes only the fragment: start over with it.
      window.addEventListener("hashchange", () => location.reload());
      startOnline(app);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
