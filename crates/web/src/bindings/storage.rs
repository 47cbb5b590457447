//! Where the page keeps its profile: SQLite's files in the Origin Private
//! File System, through the `opfs-sahpool` VFS (sync access handles, the
//! only OPFS access SQLite's synchronous I/O can use, and only in a
//! dedicated worker: web/src/worker.js). A commit is flushed to OPFS
//! before SQLite returns, so what the client acknowledged to the server
//! survives a closed tab as it survives a killed CLI.
//!
//! The access handles are exclusive: one worker of the origin holds the
//! pool at a time. worker.js takes the Web Lock `sotto-profile` first, so a
//! second tab waits for the first to let go instead of failing here.

use sqlite_wasm_vfs::sahpool::{OpfsSAHPoolCfg, install};
use std::time::Duration;
use wasm_bindgen::prelude::*;

/// How often, and how long apart, the pool is tried: the tab that just let
/// go (a reload, a take-over) closes its handles as its worker ends, which
/// may come a moment after its lock is released.
const ATTEMPTS: u32 = 20;
const BETWEEN_ATTEMPTS: Duration = Duration::from_millis(100);

/// Makes SQLite keep every database of this page in OPFS (the default VFS
/// from now on), encrypted under `key`, the profile key worker.js unwrapped
/// (32 bytes; see sotto_client::store::page_key). Call once, in the worker,
/// after taking the profile lock and before opening an account.
#[wasm_bindgen(js_name = openStorage)]
pub async fn open_storage(mut key: Vec<u8>) -> Result<(), JsError> {
    let installed = sotto_client::store::page_key::install(&key);
    key.fill(0);
    installed.map_err(|e| JsError::new(&e.to_string()))?;
    let config = OpfsSAHPoolCfg::default();
    let mut attempt = 1;
    loop {
        match install::<sqlite_wasm_rs::WasmOsCallback>(&config, true).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt >= ATTEMPTS => {
                return Err(JsError::new(&format!(
                    "cannot open this page's storage (the Origin Private File System): {e}"
                )));
            }
            Err(_) => {
                attempt += 1;
                sotto_client::clock::sleep(BETWEEN_ATTEMPTS).await;
            }
        }
    }
}
