// Web Push in the page: a device turns notifications on, the server learns
// its push endpoint, and when something arrives while no Sotto page is
// open the server posts an empty, VAPID-signed push there; the service
// worker (sw.js) says that something arrived, and nothing more.
//
// Chromium's push service is Google's (FCM), which these machines cannot
// reach, so the test plays it: a local HTTP server stands in for the push
// service, the page's PushManager answers `subscribe` with an endpoint on
// it (an init script), and the push reaches the service worker through the
// DevTools protocol. Everything between — the page, the worker, the wasm
// client, the server's store and pusher — is the real thing.
//
// Run with scripts/browser-tests.sh (after `cargo build --workspace --bins`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createPublicKey, verify } from 'node:crypto';

import { Server, sotto, launchBrowser, freshDir, watchPage } from './harness.mjs';

/** How long a push may take to reach the stand-in push service. */
const PUSH_WAIT_MS = 30_000;

let pushService;
let server;
let browser;

/** The stand-in push service: answers 201 and records every request. */
async function startPushService() {
  const received = [];
  let arrived = () => {};
  const http = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      received.push({
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: Buffer.concat(chunks),
      });
      response.writeHead(201).end();
      arrived();
    });
  });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${http.address().port}`,
    received,
    /** Resolves with the `count`th request, once it has arrived. */
    async request(count) {
      const deadline = Date.now() + PUSH_WAIT_MS;
      while (received.length < count) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`push ${count} did not arrive within ${PUSH_WAIT_MS} ms`);
        await new Promise((resolve) => {
          arrived = resolve;
          setTimeout(resolve, Math.min(left, 500));
        });
      }
      return received[count - 1];
    },
    close: () => new Promise((resolve) => http.close(resolve)),
  };
}

before(async () => {
  pushService = await startPushService();
  server = await Server.start(['--no-rate-limits', '--push-service', pushService.origin]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await pushService?.close();
});

/**
 * Makes the pages of `context` subscribe at the stand-in push service:
 * `subscribe` records the key it was given and answers with `endpoint`;
 * the subscription lasts across page loads, as a real one does.
 */
async function playThePushService(context, endpoint) {
  await context.addInitScript((endpoint) => {
    if (typeof PushManager === 'undefined') return;
    const STORED = 'sotto-test-push-subscription';
    const subscription = () => ({
      endpoint,
      expirationTime: null,
      unsubscribe: async () => {
        localStorage.removeItem(STORED);
        return true;
      },
      toJSON: () => ({ endpoint }),
    });
    PushManager.prototype.subscribe = async function (options) {
      const key = Array.from(new Uint8Array(options.applicationServerKey));
      localStorage.setItem(STORED, JSON.stringify({ key, userVisibleOnly: options.userVisibleOnly }));
      return subscription();
    };
    PushManager.prototype.getSubscription = async function () {
      return localStorage.getItem(STORED) === null ? null : subscription();
    };
  }, endpoint);
}

/** Checks a push's `Authorization: vapid t=JWT, k=KEY` (RFC 8292). */
function checkVapid(authorization, serverKey, audience) {
  const match = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(authorization ?? '');
  assert.ok(match, `a vapid Authorization header: ${authorization}`);
  const [, token, key] = match;
  assert.deepEqual([...Buffer.from(key, 'base64url')], serverKey, 'k is the key the page subscribed with');
  const [header, claims, signature] = token.split('.');
  assert.deepEqual(JSON.parse(Buffer.from(header, 'base64url')), { typ: 'JWT', alg: 'ES256' });
  const { aud, exp, sub } = JSON.parse(Buffer.from(claims, 'base64url'));
  assert.equal(aud, audience);
  assert.ok(exp > Date.now() / 1000 && exp <= Date.now() / 1000 + 24 * 3600, `exp ${exp}`);
  assert.match(sub, /^(mailto:|https:)/);
  const point = Buffer.from(serverKey);
  const publicKey = createPublicKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      x: point.subarray(1, 33).toString('base64url'),
      y: point.subarray(33, 65).toString('base64url'),
    },
    format: 'jwk',
  });
  assert.ok(
    verify('sha256', Buffer.from(`${header}.${claims}`), { key: publicKey, dsaEncoding: 'ieee-p1363' },
      Buffer.from(signature, 'base64url')),
    'the JWT is signed by the server key',
  );
}

/** The id of the page's service worker registration, from DevTools. */
async function serviceWorkerRegistration(cdp) {
  const registrations = new Map();
  cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations: updated }) => {
    for (const r of updated) if (!r.isDeleted) registrations.set(r.scopeURL, r.registrationId);
  });
  await cdp.send('ServiceWorker.enable');
  const scope = `${server.url}/`;
  for (let attempt = 0; !registrations.has(scope); attempt++) {
    if (attempt > 100) throw new Error(`no service worker registration for ${scope}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return registrations.get(scope);
}

test('a device with notifications on gets an empty push signed by the server, and only then', async () => {
  const ned = await freshDir('ned');
  await sotto(ned, ['register', 'ned-pushes', '--server', server.url]);

  const context = await browser.newContext();
  await context.grantPermissions(['notifications'], { origin: server.url });
  await playThePushService(context, `${pushService.origin}/push/pia-device`);
  const page = await context.newPage();
  const problems = watchPage(page);
  // What goes wrong in Sotto's page; not the stylesheet's document, shown
  // while no Sotto page is open, for which Chromium asks a favicon (404).
  const sottoProblems = [];
  const leave = async () => {
    sottoProblems.push(...problems.splice(0));
    await page.goto(`${server.url}/style.css`);
  };
  const comeBack = async () => {
    problems.splice(0);
    await page.goto(server.url);
  };
  await page.goto(server.url);
  await page.getByTestId('register-username').fill('pia-pushes');
  await page.getByTestId('register').click();
  await page.getByTestId('me').filter({ hasText: 'pia-pushes' }).waitFor();

  // Off by default.
  const toggle = page.getByTestId('notifications-toggle');
  assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
  await toggle.click();
  await page.getByTestId('notifications-state').filter({ hasText: 'On for this device.' }).waitFor();
  assert.equal(await toggle.getAttribute('aria-pressed'), 'true');
  const subscribed = await page.evaluate(() =>
    JSON.parse(localStorage.getItem('sotto-test-push-subscription')),
  );
  assert.equal(subscribed.userVisibleOnly, true);
  assert.equal(subscribed.key.length, 65, 'an uncompressed P-256 point');

  // While the page is open, a message comes over its socket: no push.
  await sotto(ned, ['send', 'pia-pushes', 'while the page is open']);
  await page
    .locator('[data-testid=conversation][data-kind=direct][data-name="ned-pushes"]')
    .click();
  await page.getByTestId('entry-text').filter({ hasText: 'while the page is open' }).waitFor();

  // No Sotto page open: the worker and its connection end with the page.
  await leave();
  await sotto(ned, ['send', 'pia-pushes', 'while no page is open']);
  await sotto(ned, ['send', 'pia-pushes', 'and another one']);
  const push = await pushService.request(1);
  assert.equal(push.method, 'POST');
  assert.equal(push.url, '/push/pia-device');
  assert.equal(push.body.length, 0, 'no content');
  assert.equal(push.headers['content-encoding'], undefined, 'nothing encrypted: nothing sent');
  assert.ok(Number(push.headers.ttl) > 0, `TTL ${push.headers.ttl}`);
  checkVapid(push.headers.authorization, subscribed.key, pushService.origin);
  const carried = JSON.stringify(push.headers);
  for (const secret of ['ned-pushes', 'pia-pushes', 'while no page is open']) {
    assert.ok(!carried.includes(secret), `the push names nothing: ${carried}`);
  }
  assert.equal(pushService.received.length, 1, 'the pushes before the device is back are one');

  // The service worker, given the push, says that something arrived.
  const cdp = await context.newCDPSession(page);
  const registrationId = await serviceWorkerRegistration(cdp);
  await cdp.send('ServiceWorker.deliverPushMessage', {
    origin: server.url,
    registrationId,
    data: '',
  });
  const shown = async () =>
    page.evaluate(async () => {
      const registration = await navigator.serviceWorker.getRegistration();
      return (await registration.getNotifications()).map(({ title, body, tag }) => ({ title, body, tag }));
    });
  let notifications = await shown();
  for (let attempt = 0; notifications.length === 0 && attempt < 50; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    notifications = await shown();
  }
  assert.deepEqual(notifications, [
    { title: 'Sotto', body: 'Something new arrived. Open Sotto to read it.', tag: 'sotto-activity' },
  ]);

  // The page, opened again, fetches and decrypts what arrived, and the
  // notification goes.
  await comeBack();
  await page.getByTestId('me').filter({ hasText: 'pia-pushes' }).waitFor();
  // Still on: the browser's subscription outlives the page.
  await page.getByTestId('notifications-state').filter({ hasText: 'On for this device.' }).waitFor();
  assert.equal(await toggle.getAttribute('aria-pressed'), 'true');
  await page
    .locator('[data-testid=conversation][data-kind=direct][data-name="ned-pushes"]')
    .click();
  await page.getByTestId('entry-text').filter({ hasText: 'and another one' }).waitFor();
  assert.deepEqual(await shown(), []);

  // Turned off, the server forgets the endpoint: nothing is pushed.
  await toggle.click();
  await page.getByTestId('notifications-state').filter({ hasText: 'Off.' }).waitFor();
  assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
  await leave();
  await sotto(ned, ['send', 'pia-pushes', 'after notifications were turned off']);
  // The first push came well within this; a second one would too.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.equal(pushService.received.length, 1, 'no push once turned off');

  assert.deepEqual(sottoProblems, [], 'no console error, failed request or CSP violation');
  await context.close();
});
