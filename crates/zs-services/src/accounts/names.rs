//! Account names and passwords as the service accepts them: names NFC-normalised, 1 to 64
//! characters of letters, digits and `.` `_` `-` `@`; passwords of a configured minimum
//! length, at most 1,024 bytes.

use unicode_normalization::UnicodeNormalization;

/// Longest account name, in characters.
pub const MAX_NAME: usize = 64;
/// Longest password, in bytes (argon2 takes any length; this bounds the work per request).
pub const MAX_PASSWORD: usize = 1024;

/// The account name `raw` stands for (NFC), or why it cannot be one.
pub fn normalise_name(raw: &str) -> Result<String, String> {
    // Composition joins at most a few code points into one: a longer input is not
    // normalised at all (a request may be megabytes).
    if raw.len() > 16 * MAX_NAME {
        return Err(format!("an account name is 1 to {MAX_NAME} characters"));
    }
    let name: String = raw.nfc().collect();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME {
        return Err(format!("an account name is 1 to {MAX_NAME} characters, not {n}"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))) {
        return Err(format!("an account name may hold letters, digits and . _ - @, not {c:?}"));
    }
    Ok(name)
}

/// Whether `password` may be set as a password (`min` characters at least).
pub fn check_password(password: &str, min: usize) -> Result<(), String> {
    let n = password.chars().count();
    if n < min.max(1) {
        return Err(format!("a password is at least {} characters", min.max(1)));
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!("a password is at most {MAX_PASSWORD} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_checked() {
        // "é" as one code point and as e + combining accent are the same account.
        assert_eq!(normalise_name("jos\u{e9}").unwrap(), normalise_name("jose\u{301}").unwrap());
        assert!(normalise_name("").is_err());
        assert!(normalise_name(&"a".repeat(65)).is_err());
        assert!(normalise_name(&"a".repeat(1 << 20)).is_err());
        for bad in ["a b", "a\nb", "a:b", "a[b]", "a\u{0}"] {
            assert!(normalise_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalise_name("ops.team-1@eu").unwrap(), "ops.team-1@eu");
        assert!(check_password("short", 8).is_err());
        assert!(check_password("", 0).is_err(), "never empty");
        assert!(check_password(&"x".repeat(2000), 8).is_err());
        assert!(check_password("long enough", 8).is_ok());
    }
}
