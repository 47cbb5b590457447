// Sotto's web page: shows what the worker (worker.js, which runs the
// WebAssembly module) reports, and hands it what the user asks. Everything
// about the protocol (frames, signatures, keys, the profile) happens in
// WebAssembly, in the worker, never here.

const field = (id) => document.getElementById(id);
const status = field('server-status');
const again = field('check-again');

// ---------------------------------------------------------- the worker

const worker = new Worker('worker.js', { type: 'module' });
/** Requests sent to the worker, by id, waiting for their answers. */
const pending = new Map();
let nextRequest = 1;

/** Asks the worker to run `method` (see worker.js); resolves to its answer. */
function call(method, ...args) {
  return new Promise((resolve, reject) => {
    const id = nextRequest++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, method, args });
  });
}

/** The other tabs of this page on this browser: one at a time owns the profile. */
const tabs = new BroadcastChannel('sotto-tabs');

worker.addEventListener('message', ({ data }) => {
  if (data.id !== undefined) {
    const request = pending.get(data.id);
    pending.delete(data.id);
    if (data.error !== undefined) request?.reject(new Error(data.error));
    else request?.resolve(data.result);
    return;
  }
  switch (data.type) {
    case 'loaded':
      field('version').textContent = data.version;
      checkServer();
      break;
    case 'check':
      show(data.facts);
      break;
    case 'busy':
      // Another tab has the profile: ask it to let go (it shows so).
      setAccountStatus('connecting', 'Sotto is open in another tab: moving it here…');
      tabs.postMessage('take-over');
      break;
    case 'ready':
      if (data.account) signedIn(data.account);
      else showSignUp();
      break;
    case 'event':
      onEvent(data.event);
      break;
    case 'fingerprint':
      field('join-fingerprint').textContent = data.digits;
      field('join-fingerprint-line').hidden = false;
      setAccountStatus('connecting', 'waiting for approval on your other device');
      break;
    case 'link-code':
      field('link-code').textContent = data.code;
      field('link-code-line').hidden = false;
      setAccountStatus('connecting', 'waiting for the new device (10 minutes)');
      break;
    case 'progress':
      showTransfer(data.done, data.total);
      break;
    case 'failed':
      setStatus('failed', `failed: ${data.reason}`);
      setAccountStatus('failed', data.reason);
      break;
  }
});
worker.addEventListener('error', (event) => {
  setStatus('failed', `failed: the page's worker did not start (${event.message ?? 'no reason given'})`);
});

tabs.addEventListener('message', ({ data }) => {
  if (data !== 'take-over') return;
  // Another tab of this page opened the profile: this one stops, as if
  // closed (the profile is safe: every change is committed or not made).
  worker.terminate();
  for (const request of pending.values()) request.reject(new Error('Sotto moved to another tab'));
  pending.clear();
  field('messenger').hidden = true;
  for (const id of ['register-form', 'register-hint', 'join-form']) field(id).hidden = true;
  field('moved').hidden = false;
  setAccountStatus('failed', 'Sotto is open in another tab');
});
field('use-here').addEventListener('click', () => location.reload());

// ---------------------------------------------------------- the server

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

function show(facts) {
  field('log-key').textContent = facts.logKey ?? '';
  field('log-size').textContent = facts.logSize ?? '';
  field('log-root').textContent = facts.logRoot ?? '';
  showTime('log-signed-at', facts.logSignedAt);
  field('directory-epoch').textContent = facts.directoryEpoch ?? '';
  field('directory-root').textContent = facts.directoryRoot ?? '';
  showTime('directory-signed-at', facts.directorySignedAt);
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

async function checkServer() {
  again.disabled = true;
  for (const id of FACTS) field(id).textContent = '';
  setStatus('connecting', 'connecting');
  try {
    const { facts, failure } = await call('checkServer', socketUrl());
    show(facts);
    if (failure === undefined) setStatus('verified', 'verified');
    else setStatus('failed', `failed: ${failure}`);
  } catch (e) {
    setStatus('failed', `failed: ${e.message}`);
  } finally {
    again.disabled = false;
  }
}

// ------------------------------------------------------------ messaging
//
// An account runs in the worker (the wasm `Account`, over the CLI's own
// client library); this part only shows what it returns and hands it what
// the user typed. History lines are rendered with textContent, never as HTML.

/** The signed-in account, `{ username, deviceId }`, once open. */
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

/** One reaction button label per emoji, for the line's quick reactions. */
const QUICK_REACTIONS = ['👍', '❤️', '😂'];

/** `entry` as a history line, with what was done to it and what can be. */
function entryItem(entry) {
  const item = document.createElement('li');
  item.dataset.testid = 'entry';
  item.dataset.id = entry.id;
  item.dataset.sender = entry.sender;
  const mine = entry.sender === account.username;
  item.className = mine ? 'mine' : '';
  const system = entry.type === 'system';
  if (system) item.classList.add('system');
  if (entry.reply_to) {
    item.dataset.replyTo = entry.reply_to;
    const quote = document.createElement('blockquote');
    quote.dataset.testid = 'entry-quote';
    quote.textContent = entry.quoted
      ? quoteText(entry.quoted.sender, entry.quoted)
      : '(a message this device does not have)';
    item.append(quote);
  }
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
  item.append(sender, text);
  if (entry.attachment && !entry.deleted) item.append(attachmentItem(entry));
  if (entry.edited && !entry.deleted) {
    const edited = document.createElement('span');
    edited.className = 'note';
    edited.dataset.testid = 'entry-edited';
    edited.textContent = '(edited)';
    item.append(edited);
  }
  item.append(time);
  if (entry.expires_at) {
    // Disappearing: gone from the page when due (sweepExpired), as the
    // library deletes it from the profile.
    item.dataset.expiresAt = String(entry.expires_at);
    const expires = document.createElement('span');
    expires.className = 'note';
    expires.dataset.testid = 'entry-expires';
    expires.textContent = '⏱';
    expires.title = `disappears at ${new Date(entry.expires_at).toLocaleString()}`;
    expires.setAttribute('aria-label', expires.title);
    item.append(expires);
  }
  const receipts = Object.values(entry.receipts ?? {});
  if (mine && receipts.length > 0) {
    const receipt = document.createElement('span');
    receipt.className = 'note';
    receipt.dataset.testid = 'entry-receipt';
    receipt.textContent = receipts.every((r) => r === 'read') ? 'read' : 'delivered';
    receipt.title = Object.entries(entry.receipts).map(([who, r]) => `${who}: ${r}`).join(', ');
    item.append(receipt);
  }
  const reactions = Object.entries(entry.reactions ?? {});
  if (reactions.length > 0 && !entry.deleted) {
    const shown = document.createElement('span');
    shown.className = 'reactions';
    shown.dataset.testid = 'entry-reactions';
    shown.textContent = reactions.map(([emoji, who]) => `${emoji} ${who.length}`).join('  ');
    shown.title = reactions.map(([emoji, who]) => `${emoji} ${who.join(', ')}`).join('; ');
    item.append(shown);
  }
  if (!system && !entry.deleted) item.append(entryActions(entry, mine));
  return item;
}

/** A file on a history line: its name and size, and a button to save it. */
function attachmentItem(entry) {
  const { name, size, content_type: type } = entry.attachment;
  const shown = document.createElement('span');
  shown.className = 'attachment';
  shown.dataset.testid = 'entry-attachment';
  shown.textContent = `📎 ${name} (${formatSize(size)}) `;
  const save = document.createElement('button');
  save.type = 'button';
  save.dataset.testid = 'save-attachment';
  save.textContent = 'Save';
  save.setAttribute('aria-label', `Save ${name}`);
  save.addEventListener('click', async () => {
    save.disabled = true;
    try {
      const bytes = await call('attachmentBytes', entry.id);
      const link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([bytes], { type }));
      link.download = name;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
      showTransfer(1, 1, `saved ${name}`);
    } catch (e) {
      showTransfer(0, 0, `cannot save ${name}: ${e.message}`);
    } finally {
      save.disabled = false;
    }
  });
  shown.append(save);
  return shown;
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Shows a file's transfer: `done` of `total` bytes, or a closing `label`. */
function showTransfer(done, total, label) {
  const bar = field('transfer');
  bar.hidden = label !== undefined;
  bar.max = Math.max(total, 1);
  bar.value = done;
  field('transfer-label').textContent =
    label ?? `${formatSize(done)} of ${formatSize(total)}`;
}

/** How a reply shows the line it quotes (`{text, deleted}` from `sender`). */
function quoteText(sender, { text, deleted }) {
  return `${sender}: ${deleted ? '(deleted)' : text}`;
}

/** The buttons under a line: reply, react, and edit or delete one's own. */
function entryActions(entry, mine) {
  const actions = document.createElement('span');
  actions.className = 'actions';
  const button = (label, testid, name, action) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.dataset.testid = testid;
    b.setAttribute('aria-label', name);
    b.addEventListener('click', () => action().catch((e) => setAccountStatus('failed', e.message)));
    actions.append(b);
  };
  const said = entry.text.length > 40 ? `${entry.text.slice(0, 40)}…` : entry.text;
  button('Reply', 'reply', `Reply to ${entry.sender}: ${said}`, async () =>
    compose({ mode: 'reply', id: entry.id, label: `Replying to ${entry.sender}: ${said}` }),
  );
  for (const emoji of QUICK_REACTIONS) {
    button(emoji, 'react', `React ${emoji} to ${entry.sender}: ${said}`, async () =>
      showEntry(await call('react', entry.id, emoji)),
    );
  }
  if (mine) {
    button('Edit', 'edit', `Edit your message: ${said}`, async () => {
      compose({ mode: 'edit', id: entry.id, label: `Editing your message: ${said}` });
      field('composer-text').value = entry.text;
    });
    button('Delete', 'delete', `Delete for everyone: ${said}`, async () =>
      showEntry(await call('deleteMessage', entry.id)),
    );
  }
  return actions;
}

/**
 * Shows `entry` in the open chat if it belongs there: in place of its
 * earlier version (an edit, a reaction, a receipt), or as a new line.
 */
function showEntry(entry) {
  if (!isCurrent(entry.conversation_kind, entry.conversation)) return false;
  const history = field('history');
  const earlier = [...history.children].find((li) => li.dataset.id === entry.id);
  if (earlier) earlier.replaceWith(entryItem(entry));
  else history.append(entryItem(entry));
  // Replies quote it as it is now (an edit, a delete).
  for (const reply of history.querySelectorAll(`[data-reply-to="${entry.id}"]`)) {
    const quote = reply.querySelector('[data-testid=entry-quote]');
    if (quote) quote.textContent = quoteText(entry.sender, entry);
  }
  return true;
}

/**
 * What the composer's next send does: `{mode: 'send'}`, or a reply to /
 * an edit of the line `id` (with `label` shown above the composer).
 */
let composing = { mode: 'send' };

function compose(next) {
  composing = next;
  field('composing').hidden = next.mode === 'send';
  field('composing-label').textContent = next.label ?? '';
  if (next.mode !== 'edit') field('composer-text').value = '';
  field('composer-text').focus();
}

function isCurrent(kind, name) {
  return current !== undefined && current.kind === kind && current.name === name;
}

/** Removes the disappearing lines that are due from the open chat. */
function sweepExpired() {
  const now = Date.now();
  for (const item of field('history').querySelectorAll('[data-expires-at]')) {
    if (Number(item.dataset.expiresAt) <= now) item.remove();
  }
}

/** Shows the open conversation's disappearing-messages timer. */
function showTimer(secs) {
  const select = field('timer');
  const value = String(secs);
  if (![...select.options].some((o) => o.value === value)) {
    // Set elsewhere (the CLI takes any duration): shown as it is.
    select.append(new Option(`${secs} seconds`, value));
  }
  select.value = value;
}

/**
 * Lists the open group's members, with a remove button for the others
 * (in a panel the user opens: the history keeps the room).
 */
async function showMembers(name) {
  const devices = await call('members', name);
  if (!isCurrent('group', name)) return;
  const members = new Map();
  for (const d of devices) {
    const member = members.get(d.username) ?? { devices: 0, admin: false };
    member.devices += 1;
    member.admin ||= d.admin;
    members.set(d.username, member);
  }
  field('members-summary').textContent = `Members (${members.size})`;
  field('member-list').replaceChildren(
    ...[...members].map(([username, { devices: count, admin }]) => {
      const item = document.createElement('li');
      item.dataset.testid = 'member';
      item.dataset.username = username;
      const plural = count === 1 ? 'device' : 'devices';
      item.textContent = `${username} (${count} ${plural}${admin ? ', admin' : ''})`;
      if (username !== account.username) {
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.dataset.testid = 'remove-member';
        remove.textContent = 'Remove';
        remove.setAttribute('aria-label', `Remove ${username} from the group`);
        remove.addEventListener('click', () =>
          changeGroup(() => call('removeMember', name, username)),
        );
        item.append(' ', remove);
      }
      return item;
    }),
  );
}

/** Runs a change to the open group, then shows the group as it now is. */
async function changeGroup(change) {
  const { kind, name } = current;
  try {
    await change();
  } catch (e) {
    setAccountStatus('failed', e.message);
  }
  if (isCurrent(kind, name)) await openConversation(kind, name);
}

async function refreshConversations() {
  const list = field('conversation-list');
  let conversations;
  try {
    conversations = await call('conversations');
  } catch (e) {
    setAccountStatus('failed', e.message);
    return;
  }
  const open = conversations.find((c) => isCurrent(c.kind, c.name));
  if (open) showTimer(open.timer_secs);
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
  compose({ mode: 'send' });
  hideTyping();
  typingSentAt = 0;
  field('safety').hidden = true;
  field('show-safety').hidden = kind !== 'direct';
  field('chat').hidden = false;
  field('chat-heading').textContent = kind === 'group' ? `Group ${name}` : `Chat with ${name}`;
  field('group-panel').hidden = kind !== 'group';
  field('member-list').replaceChildren();
  showTimer(0);
  const history = field('history');
  history.replaceChildren();
  if (kind === 'group') showMembers(name).catch((e) => setAccountStatus('failed', e.message));
  try {
    const entries = await call('history', kind, name);
    if (isCurrent(kind, name)) history.replaceChildren(...entries.map(entryItem));
  } catch (e) {
    // A direct chat not started yet has no history: the first message starts it.
    if (!/^you have no conversation with /.test(e.message)) setAccountStatus('failed', e.message);
  }
  field('composer-text').focus();
  await refreshConversations();
}

/** How long "X is typing…" stays up without news (the sender repeats it). */
const TYPING_SHOWN_MS = 6000;
/** How often this page tells a chat that its user is typing, at most. */
const TYPING_EVERY_MS = 4000;
let typingTimer;
let typingSentAt = 0;

/** Shows a notice that is no history line (someone typing) for a while. */
function showTyping(entry) {
  if (!isCurrent(entry.conversation_kind, entry.conversation)) return;
  const shown = field('typing');
  shown.textContent = entry.text;
  shown.hidden = false;
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => (shown.hidden = true), TYPING_SHOWN_MS);
}

function hideTyping() {
  clearTimeout(typingTimer);
  field('typing').hidden = true;
}

function onEvent(event) {
  if (event.type === 'entry' && event.entry.id === '') {
    // Lines without an id are not kept (someone typing): a notice only.
    showTyping(event.entry);
  } else if (event.type === 'entry') {
    const entry = event.entry;
    const here = isCurrent(entry.conversation_kind, entry.conversation);
    if (here && entry.type !== 'system') hideTyping();
    if (here && entry.type === 'system' && entry.conversation_kind === 'group') {
      showMembers(entry.conversation).catch(() => {});
    }
    if (showEntry(entry)) {
      // On screen means read: let the library mark it and send receipts.
      call('markRead', entry.conversation_kind, entry.conversation).catch(() => {});
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

/** Opens a link for a new device and shows its code ('link-code'), then its request. */
async function linkDevice() {
  field('link-device').disabled = true;
  try {
    const request = await call('openLink');
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
    call('refuseLink');
    setAccountStatus('verified', 'refused: the device was not linked');
    return;
  }
  try {
    const deviceId = await call('approveLink');
    setAccountStatus('verified', `linked device ${deviceId}`);
  } catch (e) {
    setAccountStatus('failed', e.message);
  }
}

/** Shows the messenger for `signedInAccount`, registered, linked or kept. */
async function signedIn(signedInAccount) {
  account = signedInAccount;
  for (const id of ['register-form', 'register-hint', 'join-form']) field(id).hidden = true;
  field('me').textContent = account.username;
  field('my-device').textContent = account.deviceId;
  field('messenger').hidden = false;
  setAccountStatus('verified', 'online');
  await refreshConversations();
  await showWarnings();
  await refreshNotifications();
  await closeNotifications();
}

// ---------------------------------------------------------- notifications
//
// Web Push, off until the user turns it on for this device: sw.js shows
// "something arrived" when a push comes and no Sotto page is in front. The
// browser's subscription is the truth for this device; the server is told
// its endpoint (and told again at every start, in case it dropped it).

const notificationsToggle = field('notifications-toggle');

/** This page's push subscription, or null when notifications are off. */
async function pushSubscription() {
  const registration = await navigator.serviceWorker.getRegistration();
  return registration ? registration.pushManager.getSubscription() : null;
}

function showNotifications(on, text) {
  notificationsToggle.setAttribute('aria-pressed', String(on));
  notificationsToggle.textContent = on ? 'Turn off notifications' : 'Turn on notifications';
  field('notifications-state').textContent = text;
}

/** Shows whether notifications are on, and reminds the server of the endpoint. */
async function refreshNotifications() {
  if (!('serviceWorker' in navigator) || !('PushManager' in window)) {
    notificationsToggle.disabled = true;
    showNotifications(false, 'This browser cannot receive push notifications.');
    return;
  }
  const subscription = await pushSubscription();
  if (subscription) await call('setPushEndpoint', subscription.endpoint);
  showNotifications(subscription !== null, subscription ? 'On for this device.' : 'Off.');
}

async function toggleNotifications() {
  const subscription = await pushSubscription();
  if (subscription) {
    // The server first: from then on it pushes nothing to this device.
    await call('setPushEndpoint', null);
    await subscription.unsubscribe();
    showNotifications(false, 'Off.');
    return;
  }
  if ((await Notification.requestPermission()) !== 'granted') {
    showNotifications(false, 'Off: this browser does not allow Sotto to notify.');
    return;
  }
  await navigator.serviceWorker.register('sw.js');
  const registration = await navigator.serviceWorker.ready;
  const subscribed = await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: new Uint8Array(await call('pushKey')),
  });
  try {
    await call('setPushEndpoint', subscribed.endpoint);
  } catch (e) {
    await subscribed.unsubscribe();
    throw e;
  }
  showNotifications(true, 'On for this device.');
}

/** A page in front has read what the notification announced. */
async function closeNotifications() {
  if (document.visibilityState !== 'visible' || !('serviceWorker' in navigator)) return;
  const registration = await navigator.serviceWorker.getRegistration();
  for (const shown of (await registration?.getNotifications()) ?? []) shown.close();
}

/** No account in this browser yet: offers to create one or link one. */
function showSignUp() {
  for (const id of ['register-form', 'register-hint', 'join-form']) field(id).hidden = false;
  setAccountStatus('', '');
}

function setUpMessaging() {
  handleForm('register-form', async () => {
    const username = field('register-username').value.trim();
    setAccountStatus('connecting', `creating ${username}…`);
    await signedIn(await call('register', serverUrl(), username));
  });
  handleForm('join-form', async () => {
    setAccountStatus('connecting', 'asking your other device…');
    try {
      await signedIn(await call('join', serverUrl(), field('join-code').value.trim()));
    } finally {
      field('join-fingerprint-line').hidden = true;
    }
  });
  field('link-device').addEventListener('click', linkDevice);
  notificationsToggle.addEventListener('click', () =>
    toggleNotifications().catch((e) => showNotifications(false, `Off: ${e.message}`)),
  );
  document.addEventListener('visibilitychange', closeNotifications);
  field('link-approve').addEventListener('click', () => answerLink(true));
  field('link-refuse').addEventListener('click', () => answerLink(false));
  handleForm('new-direct', async () => {
    const peer = field('new-direct-peer').value.trim();
    field('new-direct-peer').value = '';
    await openConversation('direct', peer);
  });
  field('timer').addEventListener('change', () => {
    const { kind, name } = current;
    const secs = Number(field('timer').value);
    call('setTimer', kind, name, secs)
      .then((entry) => {
        showEntry(entry);
        return refreshConversations();
      })
      .catch((e) => setAccountStatus('failed', e.message));
  });
  handleForm('add-member', async () => {
    const username = field('add-member-username').value.trim();
    field('add-member-username').value = '';
    await changeGroup(() => call('addMember', current.name, username));
  });
  field('leave-group').addEventListener('click', async () => {
    const { name } = current;
    try {
      await call('leaveGroup', name);
    } catch (e) {
      setAccountStatus('failed', e.message);
      return;
    }
    // Left: its messages are no longer shown; the list keeps its history.
    current = undefined;
    field('chat').hidden = true;
    await refreshConversations();
  });
  setInterval(sweepExpired, 1000);
  field('attach').addEventListener('change', async () => {
    const input = field('attach');
    const file = input.files?.[0];
    if (file === undefined || current === undefined) return;
    const { kind, name } = current;
    input.disabled = true;
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      showTransfer(0, bytes.length);
      showEntry(await call('sendFile', kind, name, file.name, bytes, null));
      showTransfer(1, 1, `sent ${file.name}`);
      await refreshConversations();
    } catch (e) {
      showTransfer(0, 0, `cannot send ${file.name}: ${e.message}`);
    } finally {
      input.value = '';
      input.disabled = false;
    }
  });
  handleForm('new-group', async () => {
    const name = field('new-group-name').value.trim();
    const members = field('new-group-members')
      .value.split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    await call('createGroup', name, members);
    field('new-group-name').value = '';
    field('new-group-members').value = '';
    await openConversation('group', name);
  });
  handleForm('composer', async () => {
    const input = field('composer-text');
    const text = input.value;
    if (current === undefined || text.trim() === '') return;
    const { kind, name } = current;
    const { mode, id } = composing;
    const shown =
      mode === 'edit'
        ? await call('edit', id, text)
        : mode === 'reply'
          ? await call('reply', kind, name, id, text)
          : await call(kind === 'group' ? 'sendGroup' : 'sendDirect', name, text);
    compose({ mode: 'send' });
    showEntry(shown);
    await refreshConversations();
  });
  field('composing-cancel').addEventListener('click', () => compose({ mode: 'send' }));
  field('composer-text').addEventListener('input', () => {
    if (current === undefined || Date.now() - typingSentAt < TYPING_EVERY_MS) return;
    typingSentAt = Date.now();
    call('sendTyping', current.kind, current.name, true).catch(() => {});
  });
  field('show-safety').addEventListener('click', () => showSafetyNumber(false));
  field('mark-verified').addEventListener('click', () => showSafetyNumber(true));
  field('acknowledge-warnings').addEventListener('click', async () => {
    await call('acknowledgeWarnings').catch((e) => setAccountStatus('failed', e.message));
    field('warnings').hidden = true;
  });
}

/**
 * Shows the safety number with the open chat's peer, as digits and as a
 * QR code to scan with their device; with `verify`, first marks it
 * verified (the user compared it).
 */
async function showSafetyNumber(verify) {
  const peer = current?.name;
  try {
    const number = await call(verify ? 'markVerified' : 'safetyNumber', peer);
    if (current?.name !== peer) return;
    field('safety-number').textContent = number.grouped;
    field('safety-qr').src = `data:image/svg+xml,${encodeURIComponent(number.qrSvg)}`;
    field('safety-qr').alt = `QR code of the safety number with ${peer}`;
    field('safety-verified').textContent = number.verified
      ? `You verified ${peer}.`
      : `Compare this with ${peer}'s screen (or scan it), then mark it verified.`;
    field('mark-verified').hidden = number.verified;
    field('safety').hidden = false;
  } catch (e) {
    // A changed identity key is refused with a warning: show it as one.
    setAccountStatus('failed', e.message);
  }
}

/** Changes to this account that none of its devices made, until acknowledged. */
async function showWarnings() {
  let warnings;
  try {
    warnings = await call('accountWarnings');
  } catch (e) {
    setAccountStatus('failed', e.message);
    return;
  }
  field('warning-list').replaceChildren(
    ...warnings.map((w) => {
      const item = document.createElement('li');
      item.textContent = w.text;
      return item;
    }),
  );
  field('warnings').hidden = warnings.length === 0;
}

again.addEventListener('click', checkServer);
setUpMessaging();
