//! Profile knowledge: the /etc/apparmor.d index, glob matching, and the near-miss explainer.
//!
//! Pure: everything here works on text handed to it. The only I/O lives in [`loader`] (read a
//! profile tree from disk into memory) and [`system`] (optional `apparmor_parser` compile check,
//! `dpkg -S`, the kernel's profile modes), which the CLI and the daemon call explicitly, and
//! [`check`] (the daemon's thread that runs those compile checks off the alert path).

pub mod check;
pub mod explain;
pub mod glob;
pub mod history;
pub mod index;
pub mod lexer;
pub mod loader;
pub mod parser;
pub mod render;
pub mod resolve;
pub mod suggest;
pub mod system;

pub use explain::{Context, Explainer, Explanation, Verdict, alert_values, explain};
pub use index::{Index, ProfileTree};
pub use render::render_text;
pub use suggest::Suggestion;
