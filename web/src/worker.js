// Sotto's worker: runs the WebAssembly module (crates/web), which holds
// this browser's account and checks the server. It is a dedicated worker
// because the profile lives in the Origin Private File System through
// sync access handles, which only a dedicated worker may open.
//
// app.js talks to it by messages:
//   page → worker  {id, method, args}        a request (see `methods`)
//   worker → page  {id, result} | {id, error} its answer
//   worker → page  {type, ...}                news: 'loaded', 'busy',
//                  'ready', 'event', 'check', 'fingerprint', 'link-code',
//                  'progress' (a file's upload or download)
//
// One tab at a time owns the profile (two clients on one MLS state would
// fork it, and OPFS access handles are exclusive): the worker holds the Web
// Lock `sotto-profile` for as long as it lives. When another tab holds it,
// the worker says 'busy' (the page asks that tab to let go) and waits.
//
// This file is a template: scripts/build-web.sh fills in the wasm's
// Subresource Integrity hash.

import init, * as sotto from './sotto_web.js';

const WASM_INTEGRITY = '@SOTTO_WEB_BG_WASM_SRI@';
const PROFILE_LOCK = 'sotto-profile';
/** The IndexedDB database, and the record in it, of the wrapped profile key. */
const KEY_STORE = 'sotto-keys';
const PROFILE_KEY = 'profile';
/** How long the server has to answer the check, from opening the socket. */
const ANSWER_TIMEOUT_MS = 15000;

const post = (message) => self.postMessage(message);

/** The open account (a wasm `Account`), once registered, joined or opened. */
let account;

/** What the page shows of an account. */
const describe = (a) => ({ username: a.username, deviceId: a.deviceId });
const onEvent = (event) => post({ type: 'event', event });

/** Resolves once this worker holds the profile lock, which it then keeps. */
async function takeProfileLock() {
  const keep = () => new Promise(() => {});
  const got = await new Promise((resolve) => {
    navigator.locks.request(PROFILE_LOCK, { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock === null ? undefined : keep();
    });
  });
  if (got) return;
  post({ type: 'busy' });
  await new Promise((resolve) => {
    navigator.locks.request(PROFILE_LOCK, () => {
      resolve();
      return keep();
    });
  });
}

const loaded = init({
  module_or_path: fetch('sotto_web_bg.wasm', { integrity: WASM_INTEGRITY }),
}).then(() => post({ type: 'loaded', version: sotto.version() }));

/** Resolves with an IndexedDB request's result. */
const settled = (request) =>
  new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });

/**
 * The profile key (32 bytes), which encrypts the whole profile database at
 * rest (crates/client/src/store/page_key.rs). It is kept in IndexedDB
 * wrapped (AES-GCM) by a WebCrypto key made non-extractable: no script,
 * this one included, can read the wrapping key's bytes, only ask the
 * browser to unwrap. Made on first use, before the profile exists.
 */
async function profileKey() {
  const open = indexedDB.open(KEY_STORE, 1);
  open.onupgradeneeded = () => open.result.createObjectStore('keys');
  const db = await settled(open);
  try {
    const keys = (mode) => db.transaction('keys', mode).objectStore('keys');
    const stored = await settled(keys('readonly').get(PROFILE_KEY));
    if (stored !== undefined) {
      const { wrappingKey, iv, wrapped } = stored;
      return new Uint8Array(
        await crypto.subtle.decrypt({ name: 'AES-GCM', iv }, wrappingKey, wrapped),
      );
    }
    const wrappingKey = await crypto.subtle.generateKey(
      { name: 'AES-GCM', length: 256 },
      false,
      ['encrypt', 'decrypt'],
    );
    const key = crypto.getRandomValues(new Uint8Array(32));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const wrapped = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, wrappingKey, key);
    // `add`, not `put`: a key stored meanwhile is never replaced.
    await settled(keys('readwrite').add({ wrappingKey, iv, wrapped }, PROFILE_KEY));
    return key;
  } finally {
    db.close();
  }
}

/** The profile, open: resolves when requests about the account may run. */
const storage = (async () => {
  await loaded;
  await takeProfileLock();
  const key = await profileKey();
  try {
    await sotto.openStorage(key);
  } finally {
    key.fill(0);
  }
  account = await sotto.Account.open(onEvent);
  post({ type: 'ready', account: account ? describe(account) : null });
})();

/**
 * Asks the server for its signed log head and directory epoch over a
 * WebSocket of its own and verifies both; posts {type: 'check'} with what
 * is known so far, and resolves with the final state.
 */
function checkServer(socketUrl) {
  const check = new sotto.ServerCheck();
  const facts = () => ({
    logKey: check.logKey,
    logSize: check.logSize,
    logRoot: check.logRoot,
    logSignedAt: check.logSignedAt,
    directoryEpoch: check.directoryEpoch,
    directoryRoot: check.directoryRoot,
    directorySignedAt: check.directorySignedAt,
  });
  return new Promise((resolve) => {
    let socket;
    let finished = false;
    let timer;
    const finish = (failure) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket?.close();
      const outcome = { facts: facts(), failure };
      check.free();
      resolve(outcome);
    };
    try {
      socket = new WebSocket(socketUrl);
    } catch (e) {
      finish(`cannot open a WebSocket to ${socketUrl} (${e.message})`);
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
      post({ type: 'check', facts: facts() });
      if (check.verified) finish();
    });
    socket.addEventListener('error', () => {
      finish('the WebSocket failed (is the server up, and does it allow this origin?)');
    });
    socket.addEventListener('close', (event) => {
      const reason = event.reason ? `: ${event.reason}` : '';
      finish(`the server closed the connection before the check finished (code ${event.code}${reason})`);
    });
  });
}

/** The account's requests, passed on as they are (see crates/web). */
const ACCOUNT_METHODS = [
  'sendDirect', 'createGroup', 'addMember', 'sendGroup', 'conversations',
  'history', 'markRead', 'members', 'devices', 'approveLink', 'refuseLink',
  'reply', 'react', 'edit', 'deleteMessage', 'safetyNumber', 'markVerified',
  'accountWarnings', 'acknowledgeWarnings', 'sendTyping', 'pushKey',
  'setPushEndpoint', 'removeMember', 'leaveGroup', 'setTimer',
];

const methods = {
  async checkServer(socketUrl) {
    await loaded;
    return checkServer(socketUrl);
  },
  async register(serverUrl, username) {
    await storage;
    account = await sotto.Account.register(serverUrl, username, onEvent);
    return describe(account);
  },
  async join(serverUrl, code) {
    await storage;
    const showFingerprint = (digits) => post({ type: 'fingerprint', digits });
    account = await sotto.Account.join(serverUrl, code, showFingerprint, onEvent);
    return describe(account);
  },
  /** Sends a file; its upload's progress comes as 'progress' news. */
  async sendFile(kind, name, fileName, bytes, text) {
    await storage;
    if (account === undefined) throw new Error('no account is open in this page');
    const report = (done, total) => post({ type: 'progress', done, total });
    return account.sendFile(kind, name, fileName, bytes, text ?? undefined, report);
  },
  /** A received file's bytes; the download's progress comes as 'progress' news. */
  async attachmentBytes(id) {
    await storage;
    if (account === undefined) throw new Error('no account is open in this page');
    return account.attachmentBytes(id, (done, total) => post({ type: 'progress', done, total }));
  },
  async openLink() {
    await storage;
    return account.openLink((code) => post({ type: 'link-code', code }));
  },
};
for (const name of ACCOUNT_METHODS) {
  methods[name] = async (...args) => {
    await storage;
    if (account === undefined) throw new Error('no account is open in this page');
    return account[name](...args);
  };
}

self.addEventListener('message', async ({ data: { id, method, args } }) => {
  try {
    if (!Object.hasOwn(methods, method)) throw new Error(`no such request: ${method}`);
    post({ id, result: await methods[method](...args) });
  } catch (e) {
    post({ id, error: e instanceof Error ? e.message : String(e) });
  }
});

// A failure before any request (the wasm, the lock, the storage) is news
// too: the page shows it instead of waiting.
storage.catch((e) => post({ type: 'failed', reason: e instanceof Error ? e.message : String(e) }));
