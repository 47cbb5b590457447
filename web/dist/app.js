// Sotto's web page: opens the WebSocket and updates the page. Everything
// about the protocol (decoding frames, verifying signatures) happens in the
// WebAssembly module (crates/web), never here.
//
// This file is a template: scripts/build-web.sh fills in the wasm's
// Subresource Integrity hash, so index.html pins this file, this file pins
// the wasm, and index.html's modulepreload pins the glue (sotto_web.js),
// which this file imports dynamically: a glue that fails its integrity
// check then shows as a failure instead of a page stuck at "connecting".

const WASM_INTEGRITY = 'sha384-AC7RR6lMv03jHwhThSnMfFGbvkXD+mrU4I/A+Tem+JErB25nVD8y9Pxux9mWVWXS';
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

// ------------------------------------------------------------ messaging
//
// An account runs in the wasm module (`Account`, over the CLI's own client
// library); this part only shows what it returns and hands it what the
// user typed. History lines are rendered with textContent, never as HTML.

/** The signed-in account (a wasm `Account`), once registered. */
let account;
/** The conversation on screen: `{ kind: 'direct' | 'group', name }`. */
let current;

const accountStatus = field('account-status');

function setAccountStatus(state, text) {
  accountStatus.dataset.state = state;
  accountStatus.textContent = text;
}

/** The server's URL as the client library wants it: where this page is. */
function serverUrl() {
  return new URL('.', document.baseURI).href;
}

function entryItem(entry) {
  const item = document.createElement('li');
  item.dataset.testid = 'entry';
  item.dataset.sender = entry.sender;
  item.className = entry.sender === account.username ? 'mine' : '';
  if (entry.type === 'system') item.classList.add('system');
  const sender = document.createElement('span');
  sender.className = 'sender';
  sender.textContent = entry.sender;
  const text = document.createElement('span');
  text.className = 'text';
  text.dataset.testid = 'entry-text';
  text.textContent = entry.deleted ? '(deleted)' : entry.text;
  const time = document.createElement('time');
  const sent = new Date(entry.sent_at);
  time.dateTime = sent.toISOString();
  time.textContent = sent.toLocaleTimeString();
  item.append(sender, text, time);
  return item;
}

function isCurrent(kind, name) {
  return current !== undefined && current.kind === kind && current.name === name;
}

async function refreshConversations() {
  const list = field('conversation-list');
  let conversations;
  try {
    conversations = await account.conversations();
  } catch (e) {
    setAccountStatus('failed', e.message);
    return;
  }
  list.replaceChildren(
    ...conversations.map((c) => {
      const item = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.testid = 'conversation';
      button.dataset.kind = c.kind;
      button.dataset.name = c.name;
      if (isCurrent(c.kind, c.name)) button.setAttribute('aria-current', 'true');
      const name = document.createElement('span');
      name.textContent = c.kind === 'group' ? `# ${c.name}` : c.name;
      button.append(name);
      if (c.unread > 0) {
        const unread = document.createElement('span');
        unread.className = 'unread';
        unread.dataset.testid = 'unread';
        unread.textContent = String(c.unread);
        unread.setAttribute('aria-label', `${c.unread} unread`);
        button.append(unread);
      }
      button.addEventListener('click', () => openConversation(c.kind, c.name));
      item.append(button);
      return item;
    }),
  );
}

async function openConversation(kind, name) {
  current = { kind, name };
  field('chat').hidden = false;
  field('chat-heading').textContent = kind === 'group' ? `Group ${name}` : `Chat with ${name}`;
  const history = field('history');
  history.replaceChildren();
  try {
    const entries = await account.history(kind, name);
    if (isCurrent(kind, name)) history.replaceChildren(...entries.map(entryItem));
  } catch (e) {
    // A direct chat not started yet has no history: the first message starts it.
    if (!/^you have no conversation with /.test(e.message)) setAccountStatus('failed', e.message);
  }
  field('composer-text').focus();
  await refreshConversations();
}

function onEvent(event) {
  if (event.type === 'entry') {
    const entry = event.entry;
    if (isCurrent(entry.conversation_kind, entry.conversation)) {
      field('history').append(entryItem(entry));
      // On screen means read: let the library mark it and send receipts.
      account.markRead(entry.conversation_kind, entry.conversation).catch(() => {});
    }
    setAccountStatus('verified', 'online');
    refreshConversations();
  } else if (event.type === 'offline') {
    setAccountStatus('failed', `offline: ${event.reason} (trying again in ${Math.round(event.retryInMs / 1000)} s)`);
  }
}

/** Runs a form's action with its button disabled, showing a failure. */
function handleForm(id, action) {
  const form = field(id);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await action(form);
    } catch (e) {
      setAccountStatus('failed', e.message);
    } finally {
      button.disabled = false;
    }
  });
}

/** Opens a link for a new device and shows its code, then its request. */
async function linkDevice() {
  field('link-device').disabled = true;
  const showCode = (code) => {
    field('link-code').textContent = code;
    field('link-code-line').hidden = false;
    setAccountStatus('connecting', 'waiting for the new device (10 minutes)');
  };
  try {
    const request = await account.openLink(showCode);
    field('link-request-device').textContent = request.deviceId;
    field('link-request-fingerprint').textContent = request.fingerprint;
    field('link-request').hidden = false;
    setAccountStatus('connecting', 'a device asks to join: compare the numbers');
  } catch (e) {
    setAccountStatus('failed', e.message);
    field('link-device').disabled = false;
  } finally {
    field('link-code-line').hidden = true;
  }
}

async function answerLink(approve) {
  field('link-request').hidden = true;
  field('link-device').disabled = false;
  if (!approve) {
    account.refuseLink();
    setAccountStatus('verified', 'refused: the device was not linked');
    return;
  }
  try {
    const deviceId = await account.approveLink();
    setAccountStatus('verified', `linked device ${deviceId}`);
  } catch (e) {
    setAccountStatus('failed', e.message);
  }
}

/** Shows the messenger for `signedInAccount`, registered or linked. */
async function signedIn(signedInAccount) {
  account = signedInAccount;
  for (const id of ['register-form', 'register-hint', 'join-form']) field(id).hidden = true;
  field('me').textContent = account.username;
  field('my-device').textContent = account.deviceId;
  field('messenger').hidden = false;
  setAccountStatus('verified', 'online');
  await refreshConversations();
}

function setUpMessaging() {
  handleForm('register-form', async () => {
    const username = field('register-username').value.trim();
    setAccountStatus('connecting', `creating ${username}…`);
    await signedIn(await wasm.Account.register(serverUrl(), username, onEvent));
  });
  handleForm('join-form', async () => {
    setAccountStatus('connecting', 'asking your other device…');
    const showFingerprint = (digits) => {
      field('join-fingerprint').textContent = digits;
      field('join-fingerprint-line').hidden = false;
      setAccountStatus('connecting', 'waiting for approval on your other device');
    };
    try {
      await signedIn(
        await wasm.Account.join(serverUrl(), field('join-code').value.trim(), showFingerprint, onEvent),
      );
    } finally {
      field('join-fingerprint-line').hidden = true;
    }
  });
  field('link-device').addEventListener('click', linkDevice);
  field('link-approve').addEventListener('click', () => answerLink(true));
  field('link-refuse').addEventListener('click', () => answerLink(false));
  handleForm('new-direct', async () => {
    const peer = field('new-direct-peer').value.trim();
    field('new-direct-peer').value = '';
    await openConversation('direct', peer);
  });
  handleForm('new-group', async () => {
    const name = field('new-group-name').value.trim();
    const members = field('new-group-members')
      .value.split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    await account.createGroup(name, members);
    field('new-group-name').value = '';
    field('new-group-members').value = '';
    await openConversation('group', name);
  });
  handleForm('composer', async () => {
    const input = field('composer-text');
    const text = input.value;
    if (current === undefined || text.trim() === '') return;
    const { kind, name } = current;
    const sent =
      kind === 'group' ? await account.sendGroup(name, text) : await account.sendDirect(name, text);
    input.value = '';
    if (isCurrent(kind, name)) field('history').append(entryItem(sent));
    await refreshConversations();
  });
}

async function main() {
  again.addEventListener('click', checkServer);
  setUpMessaging();
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
