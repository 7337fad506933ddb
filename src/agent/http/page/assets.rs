//! The page's stylesheet and its one script, inlined into every page under the response's
//! nonce (no build step, nothing fetched from elsewhere). The script only makes the page live:
//! without it the server-rendered page is complete.

/// System fonts, light and dark by `prefers-color-scheme`, colours with at least 4.5:1
/// contrast on their background, a visible focus ring.
pub(crate) const CSS: &str = include_str!("assets/style.css");

/// Subscribes to `/api/v1/stream`; on each `turn` event fetches this URL again and swaps every
/// `[data-live]` element whose HTML changed. Says its state in `#live-state` (aria-live).
pub(crate) const JS: &str = include_str!("assets/live.js");
