// The web page sotto-server serves at `/`, in headless Chromium: it loads
// under the server's Content-Security-Policy, its WebAssembly core speaks the
// real protocol to the server and verifies what it answers, and an injected
// inline script is refused.
//
// Run with scripts/browser-tests.sh (after `cargo build --workspace --bins`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

import { Server, sotto, launchBrowser, freshDir, watchPage } from './harness.mjs';

let server;
let browser;

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the page loads under the CSP and verifies the server it came from', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = watchPage(page);

  const response = await page.goto(server.url);
  assert.equal(response.status(), 200);
  const csp = response.headers()['content-security-policy'] ?? '';
  assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  assert.match(csp, /default-src 'none'/);

  await page.getByTestId('server-status').filter({ hasText: /^(verified|failed:.*)$/ }).waitFor();
  assert.equal(await page.getByTestId('server-status').textContent(), 'verified');
  assert.match(await page.getByTestId('log-key').textContent(), /^[0-9a-f]{64}$/);
  assert.match(await page.getByTestId('directory-epoch').textContent(), /^\d+$/);

  assert.deepEqual(problems, [], 'no console error, failed request or CSP violation');
  await context.close();
});

test('what the page verified is what a CLI user of the same server sees', async () => {
  const profile = await freshDir('alice');
  await sotto(profile, ['register', 'alice', '--server', server.url]);
  const whoami = await sotto(profile, ['whoami']);
  const cliLogKey = whoami.match(/server's log key ([0-9a-f]{64})/)?.[1];
  assert.ok(cliLogKey, `no log key in: ${whoami}`);

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(server.url);
  await page.getByTestId('server-status').filter({ hasText: 'verified' }).waitFor();
  assert.equal(await page.getByTestId('log-key').textContent(), cliLogKey);
  // alice's registration is in the log the page verified.
  assert.ok(Number(await page.getByTestId('log-size').textContent()) >= 1);
  await context.close();
});

test('an injected inline script does not run', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(server.url);
  await page.getByTestId('server-status').filter({ hasText: 'verified' }).waitFor();
  const outcome = await page.evaluate(
    () =>
      new Promise((resolve) => {
        document.addEventListener('securitypolicyviolation', (e) =>
          resolve({ blocked: e.violatedDirective, ran: window.injected === true }),
        );
        const script = document.createElement('script');
        script.textContent = 'window.injected = true';
        document.body.append(script);
        setTimeout(() => resolve({ blocked: null, ran: window.injected === true }), 2000);
      }),
  );
  assert.equal(outcome.ran, false);
  assert.match(outcome.blocked ?? '', /^script-src/);
  await context.close();
});

test('the check runs again from the keyboard and sees the log grow', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(server.url);
  await page.getByTestId('server-status').filter({ hasText: 'verified' }).waitFor();
  const before = Number(await page.getByTestId('log-size').textContent());

  await sotto(await freshDir('bob'), ['register', 'bob', '--server', server.url]);
  let focused = '';
  for (let i = 0; i < 20 && focused !== 'check-again'; i++) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement?.id ?? '');
  }
  assert.equal(focused, 'check-again', 'Tab reaches the "Check again" button');
  await page.keyboard.press('Enter');
  await page.getByTestId('server-status').filter({ hasText: 'verified' }).waitFor();
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid=log-size]').textContent) > n,
    before,
  );
  await context.close();
});

test('a log head altered on the network path is refused', async () => {
  // A machine in the middle: a TCP proxy in front of the server that flips
  // the last byte of the server's second WebSocket frame, the answer to
  // GetLogHead, whose last field is the head's signature. (Playwright's
  // routeWebSocket does not reach the socket a worker opens.)
  const middle = await tamperingProxy(server.url, (frame, n) => {
    if (n === 2) frame[frame.length - 1] ^= 0x01;
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(middle.url);
    const status = page.getByTestId('server-status');
    await status.filter({ hasText: /^(verified|failed:.*)$/ }).waitFor();
    assert.match(await status.textContent(), /^failed: .*/);
    assert.equal(await page.getByTestId('log-size').textContent(), '');
    assert.ok(middle.framesSeen() >= 2, 'the check went through the proxy');
  } finally {
    await context.close();
    middle.close();
  }
});

/**
 * A TCP proxy to `target` (an http:// URL) that passes everything through,
 * except that on a connection upgraded to WebSocket it hands each whole
 * frame from the server (unmasked, as servers send them) to
 * `alter(payload, n)` first, n counting from 1.
 */
async function tamperingProxy(target, alter) {
  const { hostname, port } = new URL(target);
  let frames = 0;
  const proxy = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    client.pipe(upstream);
    let pending = Buffer.alloc(0);
    let websocket;
    upstream.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      if (websocket === undefined) {
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) return;
        websocket = pending.subarray(0, 12).toString() === 'HTTP/1.1 101';
        if (!websocket) {
          upstream.unpipe?.();
          client.write(pending);
          pending = Buffer.alloc(0);
          upstream.removeAllListeners('data');
          upstream.pipe(client);
          return;
        }
        client.write(pending.subarray(0, end + 4));
        pending = pending.subarray(end + 4);
      }
      for (;;) {
        if (pending.length < 2) return;
        let length = pending[1] & 0x7f;
        let header = 2;
        if (length === 126) {
          if (pending.length < 4) return;
          length = pending.readUInt16BE(2);
          header = 4;
        } else if (length === 127) {
          if (pending.length < 10) return;
          length = Number(pending.readBigUInt64BE(2));
          header = 10;
        }
        if (pending.length < header + length) return;
        const frame = Buffer.from(pending.subarray(0, header + length));
        pending = pending.subarray(header + length);
        frames += 1;
        alter(frame.subarray(header), frames);
        client.write(frame);
      }
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${proxy.address().port}/`,
    framesSeen: () => frames,
    close: () => proxy.close(),
  };
}

test('the page fits a phone', async () => {
  const context = await browser.newContext({ viewport: { width: 375, height: 740 } });
  const page = await context.newPage();
  await page.goto(server.url);
  await page.getByTestId('server-status').filter({ hasText: 'verified' }).waitFor();
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  assert.equal(await page.locator('html').getAttribute('lang'), 'en');
  assert.ok((await page.title()).includes('Sotto'));
  const shots = process.env.SOTTO_SCREENSHOTS;
  if (shots) {
    await mkdir(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, 'web-phone.png'), fullPage: true });
    await page.setViewportSize({ width: 1100, height: 700 });
    await page.screenshot({ path: path.join(shots, 'web-desktop.png'), fullPage: true });
  }
  await context.close();
});
