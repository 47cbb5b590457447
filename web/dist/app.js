// Sotto's web page: opens the WebSocket and updates the page. Everything
// about the protocol (decoding frames, verifying signatures) happens in the
// WebAssembly module (crates/web), never here.
//
// This file is a template: scripts/build-web.sh fills in the wasm's
// Subresource Integrity hash, so index.html pins this file, this file pins
// the wasm, and index.html's modulepreload pins the glue (sotto_web.js),
// which this file imports dynamically: a glue that fails its integrity
// check then shows as a failure instead of a page stuck at "connecting".

const WASM_INTEGRITY = 'sha384-pVuBQXjBZi38AaH/1d+DM4Rl+GlwUM7zXEEb32n0l9aPLmUuQkTMQsrsmvljKFnK';
/** How long the server has to answer, from opening the socket. */
const ANSWER_TIMEOUT_MS = 15000;

/** wasm-bindgen's glue (`sotto_web.js`), once loaded. */
let wasm;

const field = (id) => document.getElementById(id);
const status = field('server-status');
const again = field('check-again');

const FACTS = [
  'log-key', 'log-size', 'log-root', 'log-signed-at',
  'directory-epoch', 'directory-root', 'directory-signed-at',
];

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

/** A time in milliseconds since the Unix epoch (a decimal string). */
function showTime(id, ms) {
  const element = field(id);
  if (ms === undefined) {
    element.textContent = '';
    element.removeAttribute('datetime');
    return;
  }
  const iso = new Date(Number(ms)).toISOString();
  element.dateTime = iso;
  element.textContent = iso;
}

function show(check) {
  field('log-key').textContent = check.logKey ?? '';
  field('log-size').textContent = check.logSize ?? '';
  field('log-root').textContent = check.logRoot ?? '';
  showTime('log-signed-at', check.logSignedAt);
  field('directory-epoch').textContent = check.directoryEpoch ?? '';
  field('directory-root').textContent = check.directoryRoot ?? '';
  showTime('directory-signed-at', check.directorySignedAt);
}

/**
 * The WebSocket endpoint of the server that served this page: `ws` beside
 * the page (so `/ws` at the root, and `/prefix/ws` behind a proxy that serves
 * Sotto under `/prefix/`), `wss:` when the page came over `https:`.
 */
function socketUrl() {
  const page = new URL('ws', document.baseURI);
  // Built as a string: Chromium's URL does not switch a URL from http: to
  // ws: through the `protocol` setter.
  const scheme = page.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${page.host}${page.pathname}`;
}

function checkServer() {
  again.disabled = true;
  for (const id of FACTS) field(id).textContent = '';
  setStatus('connecting', 'connecting');

  const check = new wasm.ServerCheck();
  let socket;
  let finished = false;
  let timer;
  const finish = (failure) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket?.close();
    show(check);
    if (failure === undefined) {
      setStatus('verified', 'verified');
    } else {
      setStatus('failed', `failed: ${failure}`);
    }
    check.free();
    again.disabled = false;
  };

  try {
    socket = new WebSocket(socketUrl());
  } catch (e) {
    finish(`cannot open a WebSocket to ${socketUrl()} (${e.message})`);
    return;
  }
  socket.binaryType = 'arraybuffer';
  timer = setTimeout(
    () => finish(`the server did not answer within ${ANSWER_TIMEOUT_MS / 1000} seconds`),
    ANSWER_TIMEOUT_MS,
  );
  socket.addEventListener('message', (event) => {
    if (finished) return;
    if (!(event.data instanceof ArrayBuffer)) {
      finish('the server sent a text message; Sotto servers speak binary frames');
      return;
    }
    let replies;
    try {
      replies = check.receive(new Uint8Array(event.data));
    } catch (e) {
      finish(e.message);
      return;
    }
    for (const reply of replies) socket.send(reply);
    show(check);
    if (check.verified) finish();
  });
  socket.addEventListener('error', () => {
    finish('the WebSocket failed (is the server up, and does it allow this origin?)');
  });
  socket.addEventListener('close', (event) => {
    const reason = event.reason ? `: ${event.reason}` : '';
    finish(`the server closed the connection before the check finished (code ${event.code}${reason})`);
  });
}

async function main() {
  again.addEventListener('click', checkServer);
  try {
    wasm = await import('./sotto_web.js');
  } catch (e) {
    setStatus('failed', `failed: cannot load the page's script sotto_web.js (${e.message})`);
    return;
  }
  try {
    await wasm.default({
      module_or_path: fetch('sotto_web_bg.wasm', { integrity: WASM_INTEGRITY }),
    });
  } catch (e) {
    setStatus('failed', `failed: cannot load the WebAssembly module (${e.message})`);
    return;
  }
  field('version').textContent = wasm.version();
  checkServer();
}

main();
