// Messaging in the page, against the real server: an account registered in
// the browser (the CLI's own client library, compiled to WebAssembly)
// chats with a CLI user and with another browser user, 1:1 and in a group.
//
// Run with scripts/browser-tests.sh (after `cargo build --workspace --bins`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { createInterface } from 'node:readline';
import { once } from 'node:events';

import { Server, sotto, sottoStart, launchBrowser, freshDir, watchPage } from './harness.mjs';

let server;
let browser;

before(async () => {
  // Every test registers accounts from the same address, faster than the
  // default limit allows.
  server = await Server.start(['--no-rate-limits']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A new browser context on the server's page, registered as `username`. */
async function registerInBrowser(username) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = watchPage(page);
  await page.goto(server.url);
  await page.getByTestId('register-username').fill(username);
  await page.getByTestId('register').click();
  await page.getByTestId('me').filter({ hasText: username }).waitFor();
  assert.match(await page.getByTestId('my-device').textContent(), /^[0-9a-f]{32}$/);
  assert.equal(await page.getByTestId('register-form').isVisible(), false, 'registered: no form');
  return { context, page, problems };
}

/** A CLI user registered on the server; returns its profile directory. */
async function registerCli(username) {
  const profile = await freshDir(username);
  await sotto(profile, ['register', username, '--server', server.url]);
  return profile;
}

function conversation(page, kind, name) {
  return page.locator(`[data-testid=conversation][data-kind=${kind}][data-name="${name}"]`);
}

/** Waits until the open chat shows a line from `sender` saying `text`. */
async function waitForLine(page, sender, text) {
  await page
    .locator(`[data-testid=entry][data-sender="${sender}"]`)
    .getByTestId('entry-text')
    .filter({ hasText: text })
    .waitFor();
}

async function send(page, text) {
  await page.getByTestId('composer-text').fill(text);
  await page.getByTestId('send').click();
  await page.getByTestId('entry-text').filter({ hasText: text }).waitFor();
}

/** The texts of the history lines `sotto sync --json` printed. */
function syncedTexts(output) {
  return output
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line))
    .map((entry) => `${entry.sender}: ${entry.text}`);
}

test('a browser user and a CLI user chat 1:1', async () => {
  const bob = await registerCli('bob');
  const alice = await registerInBrowser('alice');

  // The CLI writes first: the conversation appears in the page, unread.
  await sotto(bob, ['send', 'alice', 'hello from the terminal']);
  const withBob = conversation(alice.page, 'direct', 'bob');
  await withBob.getByTestId('unread').filter({ hasText: /^1$/ }).waitFor();
  await withBob.click();
  await waitForLine(alice.page, 'bob', 'hello from the terminal');
  // Shown is read.
  await withBob.getByTestId('unread').waitFor({ state: 'detached' });

  // The page answers; the CLI gets it.
  await send(alice.page, 'hello from the browser');
  assert.ok(
    syncedTexts(await sotto(bob, ['sync', '--json'])).includes('alice: hello from the browser'),
  );

  // A new line while the chat is open appears in it at once.
  await sotto(bob, ['send', 'alice', 'still there?']);
  await waitForLine(alice.page, 'bob', 'still there?');

  assert.deepEqual(alice.problems, [], 'no console error, failed request or CSP violation');
  await alice.context.close();
});

test('two browser users and a CLI user chat 1:1 and in a group', async () => {
  const erin = await registerCli('erin');
  const carol = await registerInBrowser('carol');
  const dave = await registerInBrowser('dave');

  // Browser to browser, 1:1: carol opens a chat with dave by name.
  await carol.page.getByTestId('new-direct-peer').fill('dave');
  await carol.page.getByTestId('new-direct').getByRole('button').click();
  await carol.page.getByTestId('chat-heading').filter({ hasText: 'dave' }).waitFor();
  await send(carol.page, 'hi dave, from carol');
  await conversation(dave.page, 'direct', 'carol').click();
  await waitForLine(dave.page, 'carol', 'hi dave, from carol');
  await send(dave.page, 'hi carol');
  await waitForLine(carol.page, 'dave', 'hi carol');

  // A group of the two browsers and the CLI user, made in the page.
  await carol.page.getByTestId('new-group-name').fill('trio');
  await carol.page.getByTestId('new-group-members').fill('dave, erin');
  await carol.page.getByTestId('new-group').getByRole('button').click();
  await carol.page.getByTestId('chat-heading').filter({ hasText: 'trio' }).waitFor();
  await send(carol.page, 'welcome to trio');

  await conversation(dave.page, 'group', 'trio').click();
  await waitForLine(dave.page, 'carol', 'welcome to trio');
  assert.ok(syncedTexts(await sotto(erin, ['sync', '--json'])).includes('carol: welcome to trio'));

  // The CLI user writes to the group; both pages show it.
  await sotto(erin, ['send', '--group', 'trio', 'erin here, on the terminal']);
  await waitForLine(dave.page, 'erin', 'erin here, on the terminal');
  await conversation(carol.page, 'group', 'trio').click();
  await waitForLine(carol.page, 'erin', 'erin here, on the terminal');

  // And a browser member's message reaches the CLI.
  await send(dave.page, 'dave agrees');
  assert.ok(syncedTexts(await sotto(erin, ['sync', '--json'])).includes('dave: dave agrees'));

  const shots = process.env.SOTTO_SCREENSHOTS;
  if (shots) {
    await mkdir(shots, { recursive: true });
    await dave.page.setViewportSize({ width: 1000, height: 800 });
    await dave.page.locator('#messaging-heading').scrollIntoViewIfNeeded();
    await dave.page.screenshot({ path: path.join(shots, 'web-chat.png') });
  }

  assert.deepEqual(carol.problems, []);
  assert.deepEqual(dave.problems, []);
  await carol.context.close();
  await dave.context.close();
});

test('a browser linked to a CLI account receives its messages, and the CLI lists it', async () => {
  const frank = await registerCli('frank');
  const gina = await registerCli('gina');

  // The CLI opens a link and prints the code; the page joins with it.
  const link = sottoStart(frank, ['device', 'link', '--yes', '--json']);
  let cliSaid = '';
  link.stderr.on('data', (chunk) => {
    cliSaid += chunk;
  });
  const exited = once(link, 'exit');
  const [first] = await once(createInterface({ input: link.stdout }), 'line');
  const code = JSON.parse(first).code;

  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = watchPage(page);
  await page.goto(server.url);
  await page.getByTestId('join-code').fill(code);
  await page.getByTestId('join').click();
  await page.getByTestId('me').filter({ hasText: 'frank' }).waitFor();
  const [status] = await exited;
  assert.equal(status, 0, `device link failed: ${cliSaid}`);
  // Both devices showed the same twelve digits.
  const fingerprint = await page.getByTestId('join-fingerprint').textContent();
  assert.match(fingerprint, /\d/);
  assert.ok(cliSaid.includes(fingerprint), `the CLI showed another number: ${cliSaid}`);

  // The CLI lists the browser as a device of the account.
  const browserDevice = await page.getByTestId('my-device').textContent();
  const devices = (await sotto(frank, ['device', 'list', '--json']))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
  assert.equal(devices.length, 2);
  assert.ok(
    devices.some((d) => d.device_id === browserDevice && !d.this_device && !d.unknown),
    JSON.stringify(devices),
  );

  // A message to the account reaches the browser too; its answer reaches
  // the other user and the account's CLI device.
  await sotto(gina, ['send', 'frank', 'to all your devices']);
  await conversation(page, 'direct', 'gina').click();
  await waitForLine(page, 'gina', 'to all your devices');
  await send(page, 'answered from the browser');
  assert.ok(
    syncedTexts(await sotto(gina, ['sync', '--json'])).includes('frank: answered from the browser'),
  );
  assert.ok(
    syncedTexts(await sotto(frank, ['sync', '--json'])).includes('frank: answered from the browser'),
  );

  assert.deepEqual(problems, []);
  await context.close();
});

test('a second browser linked from the first receives the account\'s messages', async () => {
  const ivan = await registerCli('ivan');
  const first = await registerInBrowser('hana');

  // The first browser shows a code; the second joins with it.
  await first.page.getByTestId('link-device').click();
  const code = first.page.getByTestId('link-code');
  await code.filter({ hasText: /@/ }).waitFor();

  const context = await browser.newContext();
  const second = await context.newPage();
  const problems = watchPage(second);
  await second.goto(server.url);
  await second.getByTestId('join-code').fill(await code.textContent());
  await second.getByTestId('join').click();

  // Both show the same digits before the first approves.
  const asked = first.page.getByTestId('link-request-fingerprint');
  await asked.filter({ hasText: /\d/ }).waitFor();
  await second.getByTestId('join-fingerprint').filter({ hasText: /\d/ }).waitFor();
  assert.equal(await second.getByTestId('join-fingerprint').textContent(), await asked.textContent());
  await first.page.getByTestId('link-approve').click();
  await second.getByTestId('me').filter({ hasText: 'hana' }).waitFor();
  const secondDevice = await second.getByTestId('my-device').textContent();
  assert.equal(await first.page.getByTestId('link-request-device').textContent(), secondDevice);
  assert.notEqual(secondDevice, await first.page.getByTestId('my-device').textContent());

  // A message to the account reaches both browsers.
  await sotto(ivan, ['send', 'hana', 'for both of your browsers']);
  for (const page of [first.page, second]) {
    await conversation(page, 'direct', 'ivan').click();
    await waitForLine(page, 'ivan', 'for both of your browsers');
  }

  assert.deepEqual(first.problems, []);
  assert.deepEqual(problems, []);
  await first.context.close();
  await context.close();
});

test('a reload keeps the account, its keys and its history', async () => {
  const gus = await registerCli('gus');
  const fay = await registerInBrowser('fay');
  await sotto(gus, ['send', 'fay', 'before the reload']);
  await conversation(fay.page, 'direct', 'gus').click();
  await waitForLine(fay.page, 'gus', 'before the reload');
  await send(fay.page, 'fay before the reload');
  const device = await fay.page.getByTestId('my-device').textContent();

  await fay.page.reload();
  // The same account and device, without registering again.
  await fay.page.getByTestId('me').filter({ hasText: 'fay' }).waitFor();
  assert.equal(await fay.page.getByTestId('my-device').textContent(), device);
  assert.equal(await fay.page.getByTestId('register-form').isVisible(), false);
  await conversation(fay.page, 'direct', 'gus').click();
  await waitForLine(fay.page, 'gus', 'before the reload');
  await waitForLine(fay.page, 'fay', 'fay before the reload');

  // The keys still work both ways: what comes in decrypts, what goes out
  // reaches the CLI.
  await sotto(gus, ['send', 'fay', 'after the reload']);
  await waitForLine(fay.page, 'gus', 'after the reload');
  await send(fay.page, 'fay after the reload');
  assert.ok(syncedTexts(await sotto(gus, ['sync', '--json'])).includes('fay: fay after the reload'));

  assert.deepEqual(fay.problems, []);
  await fay.context.close();
});

/**
 * Every file of the origin's private file system, read from a page of the
 * origin that runs no Sotto (the worker, and its exclusive access handles,
 * gone): for each, its size and which of `needles` its bytes contain.
 */
async function scanOpfs(page, needles) {
  return page.evaluate(async (needles) => {
    const encoded = needles.map((n) => new TextEncoder().encode(n));
    const contains = (bytes, needle) => {
      outer: for (let i = 0; i + needle.length <= bytes.length; i++) {
        for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
        return true;
      }
      return false;
    };
    const files = [];
    const walk = async (dir, prefix) => {
      for await (const [name, handle] of dir.entries()) {
        if (handle.kind === 'directory') {
          await walk(handle, `${prefix}${name}/`);
          continue;
        }
        // The worker's sync access handles close as it ends.
        let file;
        for (let attempt = 0; file === undefined; attempt++) {
          try {
            file = await handle.getFile();
          } catch (e) {
            if (attempt >= 50) throw e;
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        }
        const bytes = new Uint8Array(await file.arrayBuffer());
        files.push({
          name: `${prefix}${name}`,
          size: bytes.length,
          found: needles.filter((_, i) => contains(bytes, encoded[i])),
        });
      }
    };
    await walk(await navigator.storage.getDirectory(), '');
    return files;
  }, needles);
}

test('the profile is encrypted at rest under a key no script can export', async () => {
  const ivo = await registerCli('ivo-at-rest');
  const eve = await registerInBrowser('evelyn-at-rest');
  const secret = 'a line only the profile key should read';
  await sotto(ivo, ['send', 'evelyn-at-rest', secret]);
  await conversation(eve.page, 'direct', 'ivo-at-rest').click();
  await waitForLine(eve.page, 'ivo-at-rest', secret);

  // A page of the origin that runs no Sotto: the worker lets the profile go.
  await eve.page.goto(`${server.url}/style.css`);
  const files = await scanOpfs(eve.page, [secret, 'evelyn-at-rest', 'SQLite format 3']);
  assert.ok(
    files.some((f) => f.size > 16384),
    `the profile is in OPFS: ${JSON.stringify(files.map(({ name, size }) => ({ name, size })))}`,
  );
  assert.deepEqual(
    files.filter((f) => f.found.length > 0),
    [],
    'no file holds the message, the username or a plain SQLite header',
  );

  // The key's wrapping key is in IndexedDB, and the browser refuses to
  // give out its bytes.
  const wrapping = await eve.page.evaluate(async () => {
    const db = await new Promise((resolve, reject) => {
      const open = indexedDB.open('sotto-keys');
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const record = await new Promise((resolve, reject) => {
      const get = db.transaction('keys').objectStore('keys').get('profile');
      get.onsuccess = () => resolve(get.result);
      get.onerror = () => reject(get.error);
    });
    db.close();
    const key = record.wrappingKey;
    const exported = await crypto.subtle.exportKey('raw', key).then(
      () => 'exported',
      (e) => e.name,
    );
    return {
      type: Object.prototype.toString.call(key),
      extractable: key.extractable,
      algorithm: key.algorithm.name,
      exported,
      wrappedBytes: record.wrapped.byteLength,
    };
  });
  assert.deepEqual(wrapping, {
    type: '[object CryptoKey]',
    extractable: false,
    algorithm: 'AES-GCM',
    exported: 'InvalidAccessError',
    wrappedBytes: 32 + 16,
  });

  // Back on the page, the key opens the profile again.
  await eve.page.goto(server.url);
  await eve.page.getByTestId('me').filter({ hasText: 'evelyn-at-rest' }).waitFor();
  await conversation(eve.page, 'direct', 'ivo-at-rest').click();
  await waitForLine(eve.page, 'ivo-at-rest', secret);

  // Without its key the profile does not open, and the page says why.
  await eve.page.goto(`${server.url}/style.css`);
  await eve.page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const removal = indexedDB.deleteDatabase('sotto-keys');
        removal.onsuccess = resolve;
        removal.onerror = () => reject(removal.error);
      }),
  );
  await eve.page.goto(server.url);
  await eve.page.getByText(/does not open with its key/).first().waitFor();
  assert.equal(await eve.page.getByTestId('me').isVisible(), false);

  await eve.context.close();
});

test('a new tab takes the account over, and the first tab can take it back', async () => {
  const ida = await registerCli('ida');
  const hal = await registerInBrowser('hal');
  await sotto(ida, ['send', 'hal', 'to the first tab']);
  await conversation(hal.page, 'direct', 'ida').click();
  await waitForLine(hal.page, 'ida', 'to the first tab');

  // A second tab of the same browser opens the profile; the first lets go.
  const second = await hal.context.newPage();
  const secondProblems = watchPage(second);
  await second.goto(server.url);
  await second.getByTestId('me').filter({ hasText: 'hal' }).waitFor();
  await hal.page.getByTestId('moved').waitFor();
  assert.equal(await hal.page.getByTestId('messenger').isVisible(), false);
  await conversation(second, 'direct', 'ida').click();
  await waitForLine(second, 'ida', 'to the first tab');
  await sotto(ida, ['send', 'hal', 'to the second tab']);
  await waitForLine(second, 'ida', 'to the second tab');
  await send(second, 'hal from the second tab');
  assert.ok(syncedTexts(await sotto(ida, ['sync', '--json'])).includes('hal: hal from the second tab'));

  // "Use it here" in the first tab takes it back, with everything.
  await hal.page.getByTestId('use-here').click();
  await hal.page.getByTestId('me').filter({ hasText: 'hal' }).waitFor();
  await second.getByTestId('moved').waitFor();
  await conversation(hal.page, 'direct', 'ida').click();
  await waitForLine(hal.page, 'hal', 'hal from the second tab');

  assert.deepEqual(secondProblems, []);
  await hal.context.close();
});

/** The history `sotto history --json` prints, as objects. */
async function cliHistory(profile, peer) {
  return (await sotto(profile, ['history', peer, '--json']))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line));
}

/** The line of the open chat that says `text`. */
function line(page, text) {
  return page.locator('[data-testid=entry]').filter({
    has: page.getByTestId('entry-text').filter({ hasText: text }),
  });
}

test('replies, reactions, edits, deletes and receipts cross between a browser and the CLI', async () => {
  const kim = await registerCli('kim');
  const jay = await registerInBrowser('jay');
  await sotto(kim, ['send', 'jay', 'lunch at noon?']);
  await conversation(jay.page, 'direct', 'kim').click();
  await waitForLine(jay.page, 'kim', 'lunch at noon?');
  const asked = (await cliHistory(kim, 'jay')).find((e) => e.text === 'lunch at noon?');

  // A reply from the page quotes the line, and the CLI sees it as a reply.
  await line(jay.page, 'lunch at noon?').getByTestId('reply').click();
  await jay.page.getByTestId('composing-label').filter({ hasText: 'Replying to kim' }).waitFor();
  await send(jay.page, 'yes, noon works');
  await line(jay.page, 'yes, noon works').getByTestId('entry-quote').filter({ hasText: 'kim: lunch at noon?' }).waitFor();
  await sotto(kim, ['sync']);
  const reply = (await cliHistory(kim, 'jay')).find((e) => e.text === 'yes, noon works');
  assert.equal(reply.reply_to, asked.id);

  // A reaction from the page reaches the CLI.
  await line(jay.page, 'lunch at noon?').getByRole('button', { name: /^React 👍/ }).click();
  await line(jay.page, 'lunch at noon?').getByTestId('entry-reactions').filter({ hasText: '👍 1' }).waitFor();
  await sotto(kim, ['sync']);
  const reacted = (await cliHistory(kim, 'jay')).find((e) => e.id === asked.id);
  assert.deepEqual(reacted.reactions, { '👍': ['jay'] });
  // The CLI showed the reply (`history`); its first command 2 to 10 s
  // later sends the read receipt. The page shows it on its own line when
  // the chat is shown again (receipts are recorded, not announced).
  await new Promise((resolve) => setTimeout(resolve, 10_500));
  await sotto(kim, ['sync']);
  await conversation(jay.page, 'direct', 'kim').click();
  await line(jay.page, 'yes, noon works').getByTestId('entry-receipt').filter({ hasText: /^read$/ }).waitFor();

  // An edit from the page replaces the text everywhere; so does the CLI's.
  await line(jay.page, 'yes, noon works').getByTestId('edit').click();
  await jay.page.getByTestId('composer-text').fill('yes, 12:30 works better');
  await jay.page.getByTestId('send').click();
  await line(jay.page, 'yes, 12:30 works better').getByTestId('entry-edited').waitFor();
  assert.equal(await line(jay.page, 'yes, noon works').count(), 0, 'replaced in place');
  await sotto(kim, ['sync']);
  assert.equal((await cliHistory(kim, 'jay')).find((e) => e.id === reply.id).text, 'yes, 12:30 works better');
  await sotto(kim, ['edit', asked.id, 'lunch at 12:30?']);
  await line(jay.page, 'lunch at 12:30?').getByTestId('entry-edited').waitFor();

  // The CLI reacts and deletes; the page updates the lines in place.
  await sotto(kim, ['react', reply.id, '🎉']);
  await line(jay.page, 'yes, 12:30 works better').getByTestId('entry-reactions').filter({ hasText: '🎉 1' }).waitFor();
  await sotto(kim, ['delete', asked.id]);
  await jay.page.locator(`[data-testid=entry][data-id="${asked.id}"]`).getByTestId('entry-text').filter({ hasText: '(deleted)' }).waitFor();
  await line(jay.page, 'yes, 12:30 works better').getByTestId('entry-quote').filter({ hasText: 'kim: (deleted)' }).waitFor();

  // And a delete from the page erases the text on the CLI.
  await line(jay.page, 'yes, 12:30 works better').getByTestId('delete').click();
  await jay.page.locator(`[data-testid=entry][data-id="${reply.id}"]`).getByTestId('entry-text').filter({ hasText: '(deleted)' }).waitFor();
  await sotto(kim, ['sync']);
  const deleted = (await cliHistory(kim, 'jay')).find((e) => e.id === reply.id);
  assert.equal(deleted.deleted, true);
  assert.equal(deleted.text, '');

  assert.deepEqual(jay.problems, []);
  await jay.context.close();
});

test('disappearing messages and group membership, set in the page and seen by the CLI', async () => {
  const kim = await registerCli('kim-crew');
  const lou = await registerCli('lou-crew');
  const mia = await registerInBrowser('mia-crew');
  const { page } = mia;

  await page.getByTestId('new-group-name').fill('crew');
  await page.getByTestId('new-group-members').fill('kim-crew, lou-crew');
  await page.getByTestId('new-group').getByRole('button').click();
  await page.getByTestId('chat-heading').filter({ hasText: 'Group crew' }).waitFor();
  await page.getByTestId('members-summary').filter({ hasText: 'Members (3)' }).click();
  const members = () =>
    page.getByTestId('member').evaluateAll((items) => items.map((i) => i.dataset.username).sort());
  await page.locator('[data-testid=member][data-username="lou-crew"]').waitFor();
  assert.deepEqual(await members(), ['kim-crew', 'lou-crew', 'mia-crew']);
  assert.equal(await page.locator('[data-testid=member][data-username="mia-crew"]').getByTestId('remove-member').count(), 0);

  // A timer set in the page reaches the CLI, as a history line and a setting.
  await page.getByTestId('timer').selectOption('3600');
  await waitForLine(page, 'system', 'mia-crew set disappearing messages to 1h');
  await sotto(kim, ['sync']);
  const kimHistory = (await sotto(kim, ['--json', 'history', '--group', 'crew']))
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
  assert.ok(kimHistory.some((e) => e.text === 'mia-crew set disappearing messages to 1h'));

  // One set in the CLI shows in the page; its messages leave the page when due.
  await sotto(kim, ['timer', '--group', 'crew', '4s']);
  await waitForLine(page, 'system', 'kim-crew set disappearing messages to 4s');
  await page.waitForFunction(() => document.getElementById('timer').value === '4');
  await sotto(kim, ['send', '--group', 'crew', 'this one disappears']);
  const fleeting = page.locator('[data-testid=entry][data-sender="kim-crew"]').filter({ hasText: 'this one disappears' });
  await fleeting.waitFor();
  assert.equal(await fleeting.getByTestId('entry-expires').count(), 1);
  const expiresAt = Number(await fleeting.getAttribute('data-expires-at'));
  assert.ok(expiresAt > Date.now() - 5000 && expiresAt < Date.now() + 10_000, `expires at ${expiresAt}`);
  await fleeting.waitFor({ state: 'detached', timeout: 20_000 });
  // And the profile no longer has it: a reopened chat does not show it.
  await conversation(page, 'group', 'crew').click();
  await waitForLine(page, 'system', 'kim-crew set disappearing messages to 4s');
  assert.equal(await fleeting.count(), 0);
  await page.getByTestId('timer').selectOption('0');
  await waitForLine(page, 'system', 'mia-crew turned off disappearing messages');

  // Removing a member in the page removes them for everyone.
  await page.locator('[data-testid=member][data-username="lou-crew"]').getByTestId('remove-member').click();
  await page.locator('[data-testid=member][data-username="lou-crew"]').waitFor({ state: 'detached' });
  // The list is drawn again, whole, once the removal is committed.
  await page.locator('[data-testid=member][data-username="kim-crew"]').waitFor();
  assert.deepEqual(await members(), ['kim-crew', 'mia-crew']);
  await sotto(kim, ['sync']);
  const kimSees = async () =>
    (await sotto(kim, ['group', 'members', 'crew', '--json']))
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l).username)
      .sort();
  assert.deepEqual([...new Set(await kimSees())], ['kim-crew', 'mia-crew']);

  // Leaving in the page: the remaining member commits it.
  await page.getByTestId('leave-group').click();
  await page.locator('#chat').waitFor({ state: 'hidden' });
  await sotto(kim, ['sync']);
  await sotto(kim, ['sync']);
  assert.deepEqual([...new Set(await kimSees())], ['kim-crew']);

  assert.deepEqual(mia.problems, []);
  await mia.context.close();
});

test('files cross between a browser and the CLI, both ways, with progress', async () => {
  const nia = await registerCli('nia-files');
  const oto = await registerInBrowser('oto-files');
  const { page } = oto;
  await sotto(nia, ['send', 'oto-files', 'files next']);
  await conversation(page, 'direct', 'nia-files').click();
  await waitForLine(page, 'nia-files', 'files next');

  // From the page: more than one upload chunk (1 MiB), so it resumes in steps.
  const report = Buffer.alloc(1_500_000);
  for (let i = 0; i < report.length; i++) report[i] = (i * 7 + (i >> 11)) % 251;
  const progress = [];
  await page.exposeFunction('sottoTestProgress', (value) => progress.push(value));
  await page.evaluate(() =>
    new MutationObserver(() => {
      const bar = document.getElementById('transfer');
      window.sottoTestProgress([bar.value, bar.max]);
    }).observe(document.getElementById('transfer'), { attributes: true }),
  );
  await page.getByTestId('attach').setInputFiles({
    name: 'report.bin',
    mimeType: 'application/octet-stream',
    buffer: report,
  });
  await page.getByTestId('transfer-label').filter({ hasText: 'sent report.bin' }).waitFor();
  await page.getByTestId('entry-attachment').filter({ hasText: 'report.bin' }).waitFor();
  assert.ok(
    progress.some(([value, max]) => value > 0 && value < max && max >= report.length),
    `progress in between: ${JSON.stringify(progress)}`,
  );

  await sotto(nia, ['sync']);
  const lines = (await sotto(nia, ['--json', 'history', 'oto-files']))
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
  const fromPage = lines.find((e) => e.attachment?.name === 'report.bin');
  assert.ok(fromPage, JSON.stringify(lines));
  assert.equal(fromPage.sender, 'oto-files');
  const saved = path.join(await freshDir('nia-saved'), 'report.bin');
  await sotto(nia, ['save', fromPage.id, saved]);
  assert.ok((await readFile(saved)).equals(report), 'the CLI saved the same bytes');

  // From the CLI: the page saves the same bytes, under the sender's name.
  const photo = Buffer.from('\x89PNG\r\n\x1a\n not really a picture, but bytes all the same');
  const sentPath = path.join(await freshDir('nia-send'), 'photo.png');
  await writeFile(sentPath, photo);
  await sotto(nia, ['send', 'oto-files', '--file', sentPath, 'a picture']);
  const line = page
    .locator('[data-testid=entry][data-sender="nia-files"]')
    .filter({ has: page.getByTestId('entry-attachment') });
  await line.waitFor();
  assert.match(await line.getByTestId('entry-attachment').textContent(), /photo\.png/);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    line.getByTestId('save-attachment').click(),
  ]);
  assert.equal(download.suggestedFilename(), 'photo.png');
  assert.ok((await readFile(await download.path())).equals(photo), 'the page saved the same bytes');

  assert.deepEqual(oto.problems, []);
  await oto.context.close();
});

test('the page shows the same safety number as the CLI, as digits and a QR code', async () => {
  const lee = await registerCli('lee');
  const max = await registerInBrowser('max');
  await sotto(lee, ['send', 'max', 'compare numbers?']);
  await conversation(max.page, 'direct', 'lee').click();
  await max.page.getByTestId('show-safety').click();
  const shown = (await max.page.getByTestId('safety-number').filter({ hasText: /\d/ }).textContent()).replace(/\s/g, '');
  const cli = JSON.parse(await sotto(lee, ['verify', 'max', '--json']));
  assert.equal(shown, cli.safety_number);
  assert.match(await max.page.getByTestId('safety-qr').getAttribute('src'), /^data:image\/svg\+xml,/);
  assert.ok(await max.page.getByTestId('safety-qr').evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR code renders');
  await max.page.getByTestId('mark-verified').click();
  await max.page.getByTestId('safety-verified').filter({ hasText: 'You verified lee.' }).waitFor();
  assert.equal(await max.page.getByTestId('mark-verified').isVisible(), false);

  assert.deepEqual(max.problems, []);
  await max.context.close();
});

test('typing shows as a passing notice, both ways, and never as a history line', async () => {
  const ned = await registerCli('ned');
  const ora = await registerInBrowser('ora');
  await sotto(ned, ['send', 'ora', 'are you there?']);
  await conversation(ora.page, 'direct', 'ned').click();
  await waitForLine(ora.page, 'ned', 'are you there?');

  await sotto(ned, ['typing', 'ora']);
  await ora.page.getByTestId('typing').filter({ hasText: 'ned is typing…' }).waitFor();
  const lines = await ora.page.getByTestId('entry-text').allTextContents();
  assert.ok(lines.includes('are you there?'));
  assert.ok(!lines.some((text) => text.includes('typing')), `no line for it: ${lines}`);
  // It passes by itself.
  await ora.page.getByTestId('typing').waitFor({ state: 'hidden', timeout: 10_000 });

  // Typing in the composer tells the CLI user while it is online (typing
  // is not queued for a device that is offline).
  const listener = sottoStart(ned, ['--json', 'listen']);
  try {
    const printed = createInterface({ input: listener.stdout });
    const all = [];
    printed.on('line', (l) => all.push(l));
    const seen = (text) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`listen never printed ${text}: ${all.join(' | ')}`)), 20_000);
        printed.on('line', (l) => {
          if (l.includes(text)) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
    const online = seen('still here');
    await send(ora.page, 'still here');
    await online;
    // The page tells a chat at most every 4 s (writing "still here" did).
    await new Promise((resolve) => setTimeout(resolve, 4_100));
    const typing = seen('ora is typing…');
    await ora.page.getByTestId('composer-text').pressSequentially('yes, ', { delay: 20 });
    await typing;
  } finally {
    listener.kill();
  }
  assert.deepEqual(ora.problems, []);
  await ora.context.close();
});
