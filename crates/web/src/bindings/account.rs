//! `Account` for JavaScript: one Sotto account in this page, over the
//! CLI's own client library (`sotto-client`) run by a [`Messenger`].
//!
//! Every request returns a `Promise`; results cross as plain objects (the
//! same JSON the CLI prints with `--json`), errors as `Error`s whose message
//! is the client's. Events (new history lines, the connection failing) go to
//! the `onEvent` callback given when the account is opened.

use crate::messenger::{Event, Messenger};
use js_sys::{Function, Promise};
use serde::Serialize;
use sotto_client::endpoint::ServerUrl;
use sotto_client::{
    Client, ClientError, ConversationKind, LinkCode, LinkRequestInfo, SafetyNumber, Trust,
};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};

/// A registered account, live in this page.
#[wasm_bindgen(js_name = Account)]
#[derive(Debug)]
pub struct JsAccount {
    messenger: Messenger,
    username: String,
    device_id: String,
    /// A new device that asked to join through [`JsAccount::open_link`],
    /// waiting for the user to approve or refuse it.
    link_request: Rc<RefCell<Option<(LinkCode, LinkRequestInfo)>>>,
}

#[wasm_bindgen(js_class = Account)]
impl JsAccount {
    /// Creates the account `username` on the server at `serverUrl` (the
    /// page's own origin), with this browser as its first device, and starts
    /// listening. `onEvent` is called with `{type: "entry", entry}` for each
    /// new history line and `{type: "offline", reason, retryInMs}` when the
    /// connection fails.
    pub async fn register(
        server_url: String,
        username: String,
        on_event: Function,
    ) -> Result<JsAccount, JsError> {
        let client = Client::register_with_invite(
            &profile_dir(),
            &username,
            &server_url,
            None,
            &Trust::web_roots(),
        )
        .await
        .map_err(js_error)?;
        Ok(Self::start(client, on_event))
    }

    /// Joins an existing account as a new device of it. `code` is what the
    /// approving device shows (`sotto device link`), and must be for the
    /// server at `serverUrl` (this page's: the page may connect nowhere
    /// else). Once the request is sent, `onFingerprint` is called with
    /// twelve digits the approving device shows too: if they differ,
    /// someone else used the code. Resolves once approved.
    pub async fn join(
        server_url: String,
        code: String,
        on_fingerprint: Function,
        on_event: Function,
    ) -> Result<JsAccount, JsError> {
        let link = LinkCode::parse(&code).map_err(|e| JsError::new(&e.to_string()))?;
        let (theirs, ours) = (
            ServerUrl::parse(&link.server_url).map_err(js_error)?,
            ServerUrl::parse(&server_url).map_err(js_error)?,
        );
        if theirs.websocket() != ours.websocket() {
            return Err(JsError::new(&format!(
                "this code is for the server {}: open Sotto's page on that server to use it",
                link.server_url
            )));
        }
        let show = |fingerprint: String| {
            let _ = on_fingerprint.call1(&JsValue::NULL, &JsValue::from(fingerprint));
        };
        let client = Client::join_link(&profile_dir(), &code, &Trust::web_roots(), show)
            .await
            .map_err(js_error)?;
        Ok(Self::start(client, on_event))
    }

    /// Opens the account this browser keeps (registered or joined here
    /// before), or resolves to `undefined` when it keeps none. Call
    /// `openStorage()` first.
    pub async fn open(on_event: Function) -> Result<Option<JsAccount>, JsError> {
        let dir = profile_dir();
        if !Client::has_account(&dir).map_err(js_error)? {
            return Ok(None);
        }
        let client = Client::open(&dir).map_err(js_error)?;
        Ok(Some(Self::start(client, on_event)))
    }

    fn start(client: Client, on_event: Function) -> Self {
        let username = client.username().to_string();
        let device_id = client.device_id().to_string();
        let (messenger, task) = Messenger::start(client, move |event| {
            // A throwing callback is the page's bug; the account goes on.
            let _ = on_event.call1(&JsValue::NULL, &event_value(&event));
        });
        spawn_local(task);
        Self {
            messenger,
            username,
            device_id,
            link_request: Rc::default(),
        }
    }

    /// This account's username.
    #[wasm_bindgen(getter)]
    pub fn username(&self) -> String {
        self.username.clone()
    }

    /// This device's id, as `sotto device list` shows it.
    #[wasm_bindgen(getter, js_name = deviceId)]
    pub fn device_id(&self) -> String {
        self.device_id.clone()
    }

    /// Sends `text` to `peer`, starting a direct conversation if needed;
    /// resolves to the sent history line.
    #[wasm_bindgen(js_name = sendDirect)]
    pub fn send_direct(&self, peer: String, text: String) -> Promise {
        self.request(async move |c| c.send_direct(&peer, &text).await)
    }

    /// Creates the group `name` with `members` (usernames).
    #[wasm_bindgen(js_name = createGroup)]
    pub fn create_group(&self, name: String, members: Vec<String>) -> Promise {
        self.request(async move |c| c.create_group(&name, &members).await)
    }

    /// Adds `username` to the group `name`.
    #[wasm_bindgen(js_name = addMember)]
    pub fn add_member(&self, name: String, username: String) -> Promise {
        self.request(async move |c| c.add_member(&name, &username).await)
    }

    /// Sends `text` to the group `name`; resolves to the sent history line.
    #[wasm_bindgen(js_name = sendGroup)]
    pub fn send_group(&self, name: String, text: String) -> Promise {
        self.request(async move |c| c.send_group(&name, &text).await)
    }

    /// Replies to the message `replyTo` (hex id) in the conversation
    /// `name` of `kind`; resolves to the sent history line.
    pub fn reply(&self, kind: String, name: String, reply_to: String, text: String) -> Promise {
        self.request(async move |c| match conversation_kind(&kind)? {
            ConversationKind::Direct => c.reply_direct(&name, &text, Some(&reply_to)).await,
            ConversationKind::Group => c.reply_group(&name, &text, Some(&reply_to)).await,
        })
    }

    /// Reacts to the message `id` with `emoji` (the same emoji again takes
    /// the reaction back); resolves to the message as it is now.
    pub fn react(&self, id: String, emoji: String) -> Promise {
        self.request(async move |c| c.react(&id, &emoji).await)
    }

    /// Replaces the text of this account's message `id` for everyone;
    /// resolves to the message as it is now.
    pub fn edit(&self, id: String, text: String) -> Promise {
        self.request(async move |c| c.edit(&id, &text).await)
    }

    /// Deletes this account's message `id` for everyone; resolves to the
    /// message as it is now (its text gone).
    #[wasm_bindgen(js_name = deleteMessage)]
    pub fn delete_message(&self, id: String) -> Promise {
        self.request(async move |c| c.delete(&id).await)
    }

    /// Tells the conversation `name` of `kind` that this user is typing
    /// (`typing`) or stopped. Nobody stores it; readers drop it after 10 s.
    #[wasm_bindgen(js_name = sendTyping)]
    pub fn send_typing(&self, kind: String, name: String, typing: bool) -> Promise {
        self.request(async move |c| {
            c.send_typing(conversation_kind(&kind)?, &name, typing)
                .await
        })
    }

    /// Sends the file `fileName` (`bytes`, a `Uint8Array`), with an
    /// optional `text`, to the conversation `name` of `kind`: encrypted
    /// here, uploaded to the server's blob store, announced in an MLS
    /// message. `onProgress(done, total)` follows the upload. Resolves
    /// with the history line.
    #[wasm_bindgen(js_name = sendFile)]
    pub fn send_file(
        &self,
        kind: String,
        name: String,
        file_name: String,
        bytes: Vec<u8>,
        text: Option<String>,
        on_progress: Function,
    ) -> Promise {
        self.request(async move |c| {
            let mut report = progress_to(on_progress);
            let sent = c
                .send_file_bytes(
                    conversation_kind(&kind)?,
                    &name,
                    &file_name,
                    bytes,
                    text.as_deref(),
                    &mut report,
                )
                .await?;
            Ok(sent.entry)
        })
    }

    /// The file of the history line `id`, downloaded, checked against its
    /// hash and decrypted: a `Uint8Array`. `onProgress(done, total)`
    /// follows the download.
    #[wasm_bindgen(js_name = attachmentBytes)]
    pub fn attachment_bytes(&self, id: String, on_progress: Function) -> Promise {
        let messenger = self.messenger.clone();
        future_to_promise(async move {
            let bytes = messenger
                .run(async move |c| {
                    let mut report = progress_to(on_progress);
                    c.attachment_bytes(&id, &mut report).await
                })
                .await
                .map_err(js_error)?;
            Ok(js_sys::Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// The server's Web Push key (VAPID: an uncompressed P-256 point, as
    /// an array of bytes), the `applicationServerKey` to subscribe with.
    #[wasm_bindgen(js_name = pushKey)]
    pub fn push_key(&self) -> Promise {
        self.request(async move |c| c.push_key().await)
    }

    /// Turns Web Push on for this device with the browser's push endpoint
    /// (`PushSubscription.endpoint`), or off (`null`). The server pushes
    /// nothing but "something arrived" (docs/SERVER_DATA.md).
    #[wasm_bindgen(js_name = setPushEndpoint)]
    pub fn set_push_endpoint(&self, endpoint: Option<String>) -> Promise {
        self.request(async move |c| c.set_push_endpoint(endpoint.as_deref()).await)
    }

    /// The safety number of this account and `username`:
    /// `{digits, grouped, verified, qrSvg}`, the QR code (of the digits, as
    /// `sotto verify` shows it) as an SVG document. Fails with a warning
    /// when `username`'s identity key changed since it was last seen.
    #[wasm_bindgen(js_name = safetyNumber)]
    pub fn safety_number(&self, username: String) -> Promise {
        self.request(async move |c| {
            let (number, verified) = c.safety_number(&username, false).await?;
            Ok(safety_value(&number, verified))
        })
    }

    /// Marks `username`'s current identity key verified (the user compared
    /// the safety numbers); resolves like `safetyNumber`.
    #[wasm_bindgen(js_name = markVerified)]
    pub fn mark_verified(&self, username: String) -> Promise {
        self.request(async move |c| Ok(safety_value(&c.mark_verified(&username).await?, true)))
    }

    /// Changes to this account that none of its devices made (a device
    /// added or removed, the identity key), not yet acknowledged: a list
    /// of `{text, raisedAt}`, oldest first.
    #[wasm_bindgen(js_name = accountWarnings)]
    pub fn account_warnings(&self) -> Promise {
        self.request(async |c| {
            Ok(c.account_warnings(false)?
                .into_iter()
                .map(|a| serde_json::json!({ "text": a.text, "raisedAt": a.raised_at_ms }))
                .collect::<Vec<_>>())
        })
    }

    /// Acknowledges every account warning: the user has seen them.
    #[wasm_bindgen(js_name = acknowledgeWarnings)]
    pub fn acknowledge_warnings(&self) -> Promise {
        self.request(async |c| c.acknowledge_account_warnings())
    }

    /// Every conversation, the most recently active first, with its unread
    /// count and disappearing-messages timer (`{kind, name, unread,
    /// last_at, timer_secs}`).
    pub fn conversations(&self) -> Promise {
        self.request(async |c| c.conversations())
    }

    /// The history of the conversation `name` of `kind` (`"direct"` or
    /// `"group"`), oldest first. Showing it marks it read.
    pub fn history(&self, kind: String, name: String) -> Promise {
        self.request(async move |c| c.history(conversation_kind(&kind)?, &name))
    }

    /// Marks the conversation `name` of `kind` read, as `history` does,
    /// for a line the page shows as it arrives.
    #[wasm_bindgen(js_name = markRead)]
    pub fn mark_read(&self, kind: String, name: String) -> Promise {
        self.request(async move |c| c.mark_read(conversation_kind(&kind)?, &name))
    }

    /// The group `name`'s member devices (`{username, device_id, admin}`).
    pub fn members(&self, name: String) -> Promise {
        self.request(async move |c| c.members(&name))
    }

    /// Removes `username` (every device of theirs) from the group `name`.
    #[wasm_bindgen(js_name = removeMember)]
    pub fn remove_member(&self, name: String, username: String) -> Promise {
        self.request(async move |c| c.remove_member(&name, &username).await)
    }

    /// Leaves the group `name`: a remaining member commits the removal, and
    /// its messages are no longer shown.
    #[wasm_bindgen(js_name = leaveGroup)]
    pub fn leave_group(&self, name: String) -> Promise {
        self.request(async move |c| c.leave_group(&name).await)
    }

    /// Sets the disappearing-messages timer of the conversation `name` of
    /// `kind` for everyone in it (`secs`; 0: off). Resolves with the
    /// history line that says so.
    #[wasm_bindgen(js_name = setTimer)]
    pub fn set_timer(&self, kind: String, name: String, secs: u32) -> Promise {
        self.request(async move |c| {
            c.set_timer(conversation_kind(&kind)?, &name, u64::from(secs))
                .await
        })
    }

    /// This account's devices, from the key log.
    pub fn devices(&self) -> Promise {
        self.request(async |c| c.devices().await)
    }

    /// Links a new device: opens a link, calls `onCode` with the code to
    /// show (the new device enters it), and waits up to ten minutes for the
    /// device to ask. Resolves to `{deviceId, fingerprint}`: the user checks
    /// that the new device shows the same digits, then calls
    /// `approveLink()` or `refuseLink()`. While it waits, new messages are
    /// stored but not announced (they show when a conversation is opened).
    #[wasm_bindgen(js_name = openLink)]
    pub fn open_link(&self, on_code: Function) -> Promise {
        let pending = Rc::clone(&self.link_request);
        self.request(async move |c| {
            let code = c.open_link().await?;
            let _ = on_code.call1(&JsValue::NULL, &JsValue::from(code.reveal()));
            let request = c.wait_for_link_request(&code).await?;
            let shown = serde_json::json!({
                "deviceId": request.device_id.to_string(),
                "fingerprint": request.fingerprint,
            });
            *pending.borrow_mut() = Some((code, request));
            Ok(shown)
        })
    }

    /// Approves the device that asked through `openLink`: it joins the
    /// account and every conversation of it. Resolves to its device id.
    #[wasm_bindgen(js_name = approveLink)]
    pub fn approve_link(&self) -> Promise {
        let pending = self.link_request.borrow_mut().take();
        self.request(async move |c| {
            let (code, request) = pending
                .ok_or_else(|| ClientError::Usage("no device is waiting for approval".into()))?;
            c.approve_link(&code, &request).await?;
            Ok(request.device_id.to_string())
        })
    }

    /// Refuses the device that asked through `openLink`: it is not linked
    /// (it gives up waiting).
    #[wasm_bindgen(js_name = refuseLink)]
    pub fn refuse_link(&self) -> bool {
        self.link_request.borrow_mut().take().is_some()
    }

    /// Runs `op` in turn and gives its result to JavaScript.
    fn request<T: Serialize + 'static>(
        &self,
        op: impl AsyncFnOnce(&mut Client) -> Result<T, ClientError> + 'static,
    ) -> Promise {
        let messenger = self.messenger.clone();
        future_to_promise(async move {
            let result = messenger.run(op).await.map_err(js_error)?;
            to_js(&result).map_err(JsValue::from)
        })
    }
}

/// Where this browser keeps its profile in SQLite's file system (OPFS
/// once `openStorage()` ran): one account per browser profile and origin.
fn profile_dir() -> PathBuf {
    PathBuf::from("sotto/profile")
}

fn safety_value(number: &SafetyNumber, verified: bool) -> serde_json::Value {
    // A QR code holds 60 digits easily; an error here would be a bug, and
    // the digits alone still serve.
    let qr = qrcode::QrCode::new(number.digits().as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color>()
                .min_dimensions(200, 200)
                .build()
        })
        .unwrap_or_default();
    serde_json::json!({
        "digits": number.digits(),
        "grouped": number.grouped(),
        "verified": verified,
        "qrSvg": qr,
    })
}

fn conversation_kind(kind: &str) -> Result<ConversationKind, ClientError> {
    match kind {
        "direct" => Ok(ConversationKind::Direct),
        "group" => Ok(ConversationKind::Group),
        other => Err(ClientError::Usage(format!(
            "a conversation is \"direct\" or \"group\", not {other:?}"
        ))),
    }
}

/// A transfer's progress, told to `callback(done, total)`.
fn progress_to(callback: Function) -> impl FnMut(u64, u64) {
    move |done, total| {
        // A callback that throws changes nothing about the transfer.
        let _ = callback.call2(
            &JsValue::NULL,
            &JsValue::from_f64(done as f64),
            &JsValue::from_f64(total as f64),
        );
    }
}

fn event_value(event: &Event) -> JsValue {
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "lowercase")]
    enum Shown<'a> {
        Entry {
            entry: &'a sotto_client::HistoryEntry,
        },
        Offline {
            reason: &'a str,
            #[serde(rename = "retryInMs")]
            retry_in_ms: u64,
        },
    }
    let shown = match event {
        Event::Entry(entry) => Shown::Entry { entry },
        Event::Offline { reason, retry_in } => Shown::Offline {
            reason,
            retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
        },
    };
    to_js(&shown).unwrap_or(JsValue::NULL)
}

/// `value` as a plain JavaScript object, through JSON.
fn to_js(value: &impl Serialize) -> Result<JsValue, JsError> {
    let json = serde_json::to_string(value).map_err(|e| JsError::new(&e.to_string()))?;
    js_sys::JSON::parse(&json).map_err(|_| JsError::new("the result is not valid JSON"))
}

fn js_error(e: ClientError) -> JsError {
    JsError::new(&e.to_string())
}
