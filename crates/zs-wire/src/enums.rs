//! `wire_enum!`: one table per wire enum (variant, byte, name) from which its encoder,
//! decoder and name are generated, so a code is written down once.

/// Declares a wire enum from its table.
///
/// - `enum Name: u8 { Variant = 1 => "name", ... }` is *closed*: `from_code` returns
///   `None` for a byte not in the table.
/// - Ending the table with `_ => Other` makes it *open*: an `Other(code)` variant holds
///   codes this build does not know (sent by a newer peer), `from_code` always succeeds,
///   and `Display` shows `name (code)`.
///
/// Both get `code()`, `from_code()`, `name()` and `ALL` (the known variants).
#[macro_export]
#[doc(hidden)]
macro_rules! wire_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident: $repr:ty {
            $($(#[$vm:meta])* $v:ident = $n:literal => $text:literal,)*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $($(#[$vm])* $v = $n,)*
        }
        impl $name {
            /// Every variant, in table order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The code on the wire.
            pub fn code(self) -> $repr {
                self as $repr
            }
            /// Decodes a code; `None` if this build does not know it.
            pub fn from_code(c: $repr) -> Option<Self> {
                match c { $($n => Some($name::$v),)* _ => None }
            }
            /// A short lower-case name, for logs and errors.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $text,)* }
            }
        }
    };
    (
        $(#[$m:meta])*
        pub enum $name:ident: $repr:ty {
            $($(#[$vm:meta])* $v:ident = $n:literal => $text:literal,)*
            _ => Other,
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)*
            /// A code this build does not know (sent by a newer peer).
            Other($repr),
        }
        impl $name {
            /// Every known variant, in table order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The code on the wire.
            pub fn code(self) -> $repr {
                match self { $($name::$v => $n,)* $name::Other(c) => c }
            }
            /// Decodes a code (unknown ones become `Other`).
            pub fn from_code(c: $repr) -> Self {
                match c { $($n => $name::$v,)* other => $name::Other(other) }
            }
            /// A short lower-case name, for logs and errors.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $text,)* $name::Other(_) => "unknown code" }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} ({})", self.name(), self.code())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use crate::bulk::StreamMode;
    use crate::mux::{ChannelKind, MuxCode};
    use crate::secure::NoiseCipher;
    use crate::session::Refusal;
    use crate::{ErrorCode, GoAwayCode, Kind};

    macro_rules! check_table {
        ($t:ty, closed) => {{
            let codes: HashSet<_> = <$t>::ALL.iter().map(|v| v.code()).collect();
            let names: HashSet<_> = <$t>::ALL.iter().map(|v| v.name()).collect();
            assert_eq!(codes.len(), <$t>::ALL.len(), "{}: codes are unique", stringify!($t));
            assert_eq!(names.len(), <$t>::ALL.len(), "{}: names are unique", stringify!($t));
            for v in <$t>::ALL {
                assert_eq!(<$t>::from_code(v.code()), Some(*v));
                assert_eq!(*v as u8 as u32, v.code() as u32, "the discriminant is the code");
            }
            let unknown = (0..=255u8).filter(|c| !codes.contains(c)).collect::<Vec<_>>();
            assert!(unknown.iter().all(|&c| <$t>::from_code(c).is_none()));
        }};
        ($t:ty, open) => {{
            let codes: HashSet<_> = <$t>::ALL.iter().map(|v| v.code()).collect();
            assert_eq!(codes.len(), <$t>::ALL.len(), "{}: codes are unique", stringify!($t));
            for v in <$t>::ALL {
                assert_eq!(<$t>::from_code(v.code()), *v);
                assert!(!v.to_string().is_empty());
            }
            for c in 0..=255 {
                assert_eq!(<$t>::from_code(c).code(), c, "unknown codes survive a round trip");
            }
        }};
    }

    #[test]
    fn every_table_round_trips() {
        check_table!(Kind, closed);
        check_table!(StreamMode, closed);
        check_table!(ChannelKind, closed);
        check_table!(NoiseCipher, closed);
        check_table!(Refusal, closed);
        check_table!(MuxCode, closed);
        check_table!(ErrorCode, open);
        check_table!(GoAwayCode, open);
        assert!(matches!(ErrorCode::from_code(999), ErrorCode::Other(999)));
    }
}
