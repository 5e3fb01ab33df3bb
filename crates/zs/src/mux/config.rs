//! Settings of virtual channels: windows and limits.

/// Smallest receive window a channel uses (one full data frame); smaller settings are
/// raised to it, since a channel whose window is below one frame could never send.
pub const MIN_WINDOW: u32 = 64 << 10;

/// Limits and windows of virtual channels.
#[derive(Debug, Clone, Copy)]
pub struct MuxConfig {
    /// Receive window a channel starts with (default 256 KiB; at least [`MIN_WINDOW`]).
    pub initial_window: u32,
    /// Largest a channel's window grows to, while its reader keeps up and the window is
    /// under four times the measured bandwidth-delay product (default 16 MiB; at least the
    /// initial window).
    pub max_window: u32,
    /// Most channels open at once on one connection (default 250,000); opens beyond it
    /// are refused with `TooManyChannels`.
    pub max_channels: usize,
}

impl MuxConfig {
    /// The windows in effect, (initial, max): the settings raised to their minimums.
    pub(crate) fn windows(&self) -> (u32, u32) {
        let initial = self.initial_window.max(MIN_WINDOW);
        (initial, self.max_window.max(initial))
    }
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig { initial_window: 256 << 10, max_window: 16 << 20, max_channels: 250_000 }
    }
}
