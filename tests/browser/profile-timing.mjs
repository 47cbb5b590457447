// How long the page takes to save and to load a profile with 100
// conversations, in OPFS (issue #17): a measurement, not a test, so not
// run by CI. Run after `cargo build --workspace --bins` (or with
// SOTTO_BIN_DIR=target/release after a release build):
//
//   cd tests/browser && npm ci && node profile-timing.mjs [CONVERSATIONS]
//
// It registers a browser user, creates the groups in the page (each with
// one CLI member, so each holds a real two-member MLS group) and sends one
// line in each, then reloads the page and times it. "save" is one line
// sent, as the user sees it: encrypt, commit to OPFS, the server's ack.
// "load" is from reload to the conversation list showing every group:
// the wasm, the OPFS pool, the profile opened, the list read.

import { Server, sotto, launchBrowser, freshDir } from './harness.mjs';

const count = Number(process.argv[2] ?? 100);

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
const ms = (value) => `${value.toFixed(0)} ms`;

const server = await Server.start(['--no-rate-limits']);
const browser = await launchBrowser();
try {
  const peer = await freshDir('peer');
  await sotto(peer, ['register', 'peer', '--server', server.url]);
  const page = await (await browser.newContext()).newPage();
  await page.goto(server.url);
  await page.getByTestId('register-username').fill('timer');
  await page.getByTestId('register').click();
  await page.getByTestId('me').filter({ hasText: 'timer' }).waitFor();

  const creates = [];
  const sends = [];
  for (let i = 0; i < count; i++) {
    const name = `group-${i}`;
    let start = performance.now();
    await page.getByTestId('new-group-name').fill(name);
    await page.getByTestId('new-group-members').fill('peer');
    await page.getByTestId('new-group').getByRole('button').click();
    await page.getByTestId('chat-heading').filter({ hasText: name }).waitFor();
    creates.push(performance.now() - start);
    // The peer's pool of KeyPackages refills when it syncs.
    if (i % 20 === 19) await sotto(peer, ['sync']);

    start = performance.now();
    await page.getByTestId('composer-text').fill(`line ${i}`);
    await page.getByTestId('send').click();
    await page.getByTestId('entry-text').filter({ hasText: `line ${i}` }).waitFor();
    sends.push(performance.now() - start);
    if (i % 10 === 9) console.error(`${i + 1} groups`);
  }

  const loads = [];
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    await page.reload();
    await page.getByTestId('conversation').nth(count - 1).waitFor();
    loads.push(performance.now() - start);
  }
  const opened = performance.now();
  await page.getByTestId('conversation').first().click();
  await page.getByTestId('entry-text').first().waitFor();
  const openOne = performance.now() - opened;

  const usage = await page.evaluate(async () => (await navigator.storage.estimate()).usage);
  console.log(`conversations: ${count}`);
  console.log(`create a group (median of ${count}): ${ms(median(creates))}`);
  console.log(`save: send one line (median of ${count}): ${ms(median(sends))}, max ${ms(Math.max(...sends))}`);
  console.log(`load: reload until all ${count} are listed (median of 5): ${ms(median(loads))} (${loads.map(ms).join(', ')})`);
  console.log(`open one conversation's history: ${ms(openOne)}`);
  console.log(`storage used by the origin: ${(usage / 1024 / 1024).toFixed(1)} MiB`);
} finally {
  await browser.close();
  await server.stop();
}
