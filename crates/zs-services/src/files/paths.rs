//! The sandbox: a request's path names an area (`public/`, `home/`, `shared/NAME/`) and a
//! place inside it; every path resolves inside its area or is refused with the reason.

use std::path::{Component, Path, PathBuf};

/// Longest path a request may name, in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest component of a path, in bytes.
pub const MAX_COMPONENT: usize = 255;

/// The area a path is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Area {
    /// Read by logged-in users (or everyone, if configured), written by admins.
    Public,
    /// The caller's own files.
    Home,
    /// A shared folder, by name.
    Shared(String),
}

/// A checked path: its area and its components (none for the area's root).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AreaPath {
    /// The area.
    pub area: Area,
    /// The components below the area's root, each checked.
    pub parts: Vec<String>,
}

impl AreaPath {
    /// Parses and checks a request's path (`home/docs/a.txt`).
    pub fn parse(raw: &str) -> Result<AreaPath, String> {
        if raw.len() > MAX_PATH {
            return Err(format!("path longer than {MAX_PATH} bytes"));
        }
        if raw.starts_with('/') || raw.starts_with('\\') {
            return Err(
                "absolute paths are refused: a path starts with public/, home/ or shared/NAME/".into()
            );
        }
        let mut parts = raw.split('/').filter(|p| !p.is_empty());
        let area = match parts.next() {
            Some("public") => Area::Public,
            Some("home") => Area::Home,
            Some("shared") => match parts.next() {
                Some(name) => {
                    check_component(name)?;
                    Area::Shared(name.to_owned())
                }
                None => return Err("shared/ needs a folder name: shared/NAME/...".into()),
            },
            Some(other) => {
                return Err(format!(
                    "no area `{}`: a path starts with public/, home/ or shared/NAME/",
                    other.escape_debug()
                ))
            }
            None => return Err("empty path: a path starts with public/, home/ or shared/NAME/".into()),
        };
        let parts =
            parts.map(|p| check_component(p).map(|()| p.to_owned())).collect::<Result<Vec<_>, _>>()?;
        Ok(AreaPath { area, parts })
    }

    /// The path as requests write it.
    pub fn display(&self) -> String {
        let mut s = match &self.area {
            Area::Public => "public".to_string(),
            Area::Home => "home".to_string(),
            Area::Shared(n) => format!("shared/{n}"),
        };
        for p in &self.parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }

    /// The last component (`None` for an area's root).
    pub fn name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// The same area, one more component.
    pub fn child(&self, name: &str) -> AreaPath {
        let mut parts = self.parts.clone();
        parts.push(name.to_owned());
        AreaPath { area: self.area.clone(), parts }
    }
}

/// Names Windows reserves for devices: refused so no client can be handed a file it cannot
/// write, and no share can hold one.
const DEVICES: &[&str] = &["con", "prn", "aux", "nul", "conin$", "conout$"];

fn check_component(p: &str) -> Result<(), String> {
    if p.len() > MAX_COMPONENT {
        return Err(format!("a path component is longer than {MAX_COMPONENT} bytes"));
    }
    if p == "." || p == ".." {
        return Err(format!("`{p}` is refused in a path"));
    }
    if let Some(c) = p.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(format!("a path component holds {}", c.escape_debug()));
    }
    let stem = p.split('.').next().unwrap_or(p).trim_end().to_ascii_lowercase();
    let numbered = |prefix: &str| {
        stem.strip_prefix(prefix).is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
    };
    if DEVICES.contains(&stem.as_str()) || numbered("com") || numbered("lpt") {
        return Err(format!("`{}` is a device name", p.escape_debug()));
    }
    Ok(())
}

/// `root` joined with `parts`, refused if an existing part of it (a symbolic link) leads
/// outside `root`.
pub fn resolve(root: &Path, parts: &[String]) -> Result<PathBuf, String> {
    let real_root = root.canonicalize().map_err(|e| format!("area root: {e}"))?;
    let mut path = real_root.clone();
    for p in parts {
        path.push(p);
        match path.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                let target = path.canonicalize().map_err(|_| "a symbolic link in the path leads nowhere")?;
                if !target.starts_with(&real_root) {
                    return Err("a symbolic link in the path leads outside its area".into());
                }
            }
            Ok(_) => {}
            // What does not exist yet cannot lead anywhere.
            Err(_) => break,
        }
    }
    let full = parts.iter().fold(real_root.clone(), |acc, p| acc.join(p));
    debug_assert!(full.components().all(|c| !matches!(c, Component::ParentDir)));
    Ok(full)
}

/// A user's name as a directory name: itself when plainly safe, else `u-` and its hex.
pub fn user_dir_name(user: &str) -> String {
    let plain = !user.is_empty()
        && !user.starts_with('.')
        && !user.starts_with("u-")
        && user.len() <= 64
        && user.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if plain {
        return user.to_owned();
    }
    let hex: String = user.bytes().take(100).map(|b| format!("{b:02x}")).collect();
    format!("u-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        let p = AreaPath::parse("home/docs//a.txt").unwrap();
        assert_eq!((p.area.clone(), p.parts.clone()), (Area::Home, vec!["docs".into(), "a.txt".into()]));
        assert_eq!(p.display(), "home/docs/a.txt");
        assert_eq!(AreaPath::parse("shared/team/x").unwrap().area, Area::Shared("team".into()));
        for bad in [
            "/etc/passwd",
            "home/../x",
            "home/./x",
            "public/a\0b",
            "public/a\\b",
            "public/CON",
            "public/lpt1.txt",
            "public/Aux.tar.gz",
            "other/x",
            "",
            "shared/",
            "shared/..",
        ] {
            assert!(AreaPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(AreaPath::parse(&format!("public/{}", "a".repeat(256))).is_err());
        assert!(AreaPath::parse(&"public/a".repeat(600)).is_err());
        assert!(AreaPath::parse("public/com10").is_ok());
    }

    #[test]
    fn user_names_make_safe_directories() {
        assert_eq!(user_dir_name("alice"), "alice");
        assert_eq!(user_dir_name("Alice"), "u-416c696365");
        assert_eq!(user_dir_name(".."), "u-2e2e");
        assert_eq!(user_dir_name("u-x"), "u-752d78");
    }
}
