// What the browser tests share: the real sotto-server and sotto binaries
// from target/ (SOTTO_BIN_DIR overrides), Debian's Chromium through
// playwright-core, and a watch for anything going wrong in a page.

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const binDir = process.env.SOTTO_BIN_DIR ?? path.join(root, 'target', 'debug');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const scratch = [];

/** A fresh temporary directory, removed when the process exits. */
export async function freshDir(name) {
  const dir = await mkdtemp(path.join(tmpdir(), `sotto-browser-${name}-`));
  scratch.push(dir);
  return dir;
}

process.on('exit', () => {
  // Best effort: the OS cleans tmp too.
  for (const dir of scratch) rm(dir, { recursive: true, force: true }).catch(() => {});
});

/** A real sotto-server on 127.0.0.1, port chosen by the OS, empty data dir. */
export class Server {
  static async start(extraArgs = []) {
    const data = await freshDir('server');
    const child = spawn(
      path.join(binDir, 'sotto-server'),
      ['--listen', '127.0.0.1:0', '--data', data, ...extraArgs],
      { env: { ...process.env, RUST_LOG: 'warn', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const lines = createInterface({ input: child.stdout });
    const first = await new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`sotto-server exited with ${code}`)));
      lines.once('line', resolve);
    });
    const url = first.trim().replace(/^sotto-server listening on /, '');
    if (!/^https?:\/\//.test(url)) throw new Error(`unexpected first line from sotto-server: ${first}`);
    // Keep draining stdout so the server never blocks on a full pipe.
    lines.on('line', () => {});
    const server = new Server();
    server.child = child;
    server.url = url;
    server.data = data;
    return server;
  }

  async stop() {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }
}

/** Runs the `sotto` CLI with `profile` and returns its standard output. */
export async function sotto(profile, args) {
  const { stdout } = await promisify(execFile)(path.join(binDir, 'sotto'), ['--profile', profile, ...args], {
    env: { ...process.env, NO_COLOR: '1' },
    timeout: 60_000,
  });
  return stdout;
}

/**
 * Starts the `sotto` CLI with `profile` for a command that keeps running
 * (`device link`); returns the child process (stdout and stderr piped).
 */
export function sottoStart(profile, args) {
  return spawn(path.join(binDir, 'sotto'), ['--profile', profile, ...args], {
    env: { ...process.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Headless Debian Chromium. */
export function launchBrowser() {
  return chromium.launch({ executablePath: chromiumPath, headless: true });
}

/**
 * Collects console errors, uncaught exceptions, failed requests and CSP
 * violations of `page` into the returned array (empty while all is well).
 */
export function watchPage(page) {
  const problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`exception: ${error.message}`));
  page.on('requestfailed', (request) =>
    problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`),
  );
  return problems;
}
