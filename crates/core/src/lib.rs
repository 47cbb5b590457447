//! The sans-I/O heart of a Sotto client: identities, device certificates and
//! MLS conversations over `openmls`. No sockets, files or clocks in here:
//! callers pass an [`openmls_traits::OpenMlsProvider`] (which owns storage),
//! the current time and the bytes that arrived, and get back bytes to send and
//! events to show. The CLI, the server's tests and (later) the browser client
//! share it.
//!
//! ```
//! use sotto_core::identity::{Account, Username};
//!
//! let account = Account::generate(Username::parse("alice").unwrap());
//! let signed = account.signed_device();
//! let verified = sotto_core::identity::VerifiedDevice::verify(
//!     &account.identity_public(), &signed).unwrap();
//! assert_eq!(verified.username.as_str(), "alice");
//! ```

pub mod attachment;
pub mod content;
pub mod disappearing;
pub mod franking;
pub mod group;
pub mod history;
pub mod identity;
pub mod link;
pub mod mimi;
pub mod safety;

pub use openmls;
pub use openmls_rust_crypto;
pub use openmls_traits;
