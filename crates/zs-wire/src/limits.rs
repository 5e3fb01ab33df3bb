/// Hard limits every decoder enforces; exceeding one is an error, never a panic or an
/// unbounded allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted, in bytes. Default 16 MiB.
    pub max_frame_len: u32,
    /// Deepest nesting of arrays and maps inside a DataFrame. Default 32.
    pub max_depth: u16,
    /// Most values (counted recursively) in one DataFrame. Default 1,048,576.
    pub max_elements: u32,
}

impl Limits {
    /// Default largest frame body: 16 MiB.
    pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 << 20;
    /// Default deepest DataFrame nesting.
    pub const DEFAULT_MAX_DEPTH: u16 = 32;
    /// Default most values in one DataFrame.
    pub const DEFAULT_MAX_ELEMENTS: u32 = 1 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_elements: Self::DEFAULT_MAX_ELEMENTS,
        }
    }
}
