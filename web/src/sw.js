// Sotto's service worker: it exists only for Web Push, which a device turns
// on in the page (off by default). A push from the server carries nothing —
// no content, no sender, no conversation (docs/SERVER_DATA.md) — so all this
// worker can say is that something arrived. Opening the page fetches and
// decrypts it; nothing here touches the account or its keys.
//
// It caches nothing and intercepts no request: every file still comes from
// the server, as `sotto audit` checks it.

/** The one notification Sotto shows: replaced, not stacked, by the next. */
const TAG = 'sotto-activity';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  event.waitUntil(
    (async () => {
      // A Sotto page in front already has it (its socket is open).
      const pages = await self.clients.matchAll({ type: 'window' });
      const sotto = (page) => ['/', '/index.html'].includes(new URL(page.url).pathname);
      if (pages.some((page) => page.focused && sotto(page))) return;
      await self.registration.showNotification('Sotto', {
        body: 'Something new arrived. Open Sotto to read it.',
        tag: TAG,
      });
    })(),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(
    (async () => {
      const pages = await self.clients.matchAll({ type: 'window' });
      const open = pages.find((page) => new URL(page.url).origin === self.location.origin);
      if (open) await open.focus();
      else await self.clients.openWindow('/');
    })(),
  );
});
