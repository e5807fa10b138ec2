//! Read-only registry access: an owned key, its subkey names and string values.

use std::io;

use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_MORE_DATA, ERROR_NO_MORE_ITEMS};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_READ, REG_EXPAND_SZ, REG_SZ, RegCloseKey, RegEnumKeyExW,
    RegOpenKeyExW, RegQueryValueExW,
};

use super::wide;

/// An open registry key, closed on drop.
#[derive(Debug)]
pub(crate) struct RegKey(HKEY);

// SAFETY: a registry key handle may be used and closed from any thread.
unsafe impl Send for RegKey {}

fn win32(code: u32) -> io::Error {
    io::Error::from_raw_os_error(code as i32)
}

impl RegKey {
    /// Opens `path` under `HKEY_LOCAL_MACHINE` for reading.
    pub(crate) fn open_local_machine(path: &str) -> io::Result<Self> {
        Self::open(HKEY_LOCAL_MACHINE, path)
    }

    /// Opens the subkey `name` of this key for reading.
    pub(crate) fn open_subkey(&self, name: &str) -> io::Result<Self> {
        Self::open(self.0, name)
    }

    fn open(parent: HKEY, path: &str) -> io::Result<Self> {
        let path = wide(path);
        let mut key: HKEY = std::ptr::null_mut();
        // SAFETY: `parent` is a predefined key or one we own and keep open for the call, `path`
        // is NUL-terminated and outlives the call, and `key` is a valid place for the result.
        let status = unsafe { RegOpenKeyExW(parent, path.as_ptr(), 0, KEY_READ, &mut key) };
        if status == 0 {
            Ok(Self(key))
        } else {
            Err(win32(status))
        }
    }

    /// The names of this key's subkeys.
    pub(crate) fn subkey_names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        // Key names are at most 255 characters.
        let mut buf = [0_u16; 256];
        for index in 0.. {
            let mut len = buf.len() as u32;
            // SAFETY: `buf` holds `len` u16s and outlives the call; the optional class, reserved
            // and time parameters are null, which the function accepts.
            let status = unsafe {
                RegEnumKeyExW(
                    self.0,
                    index,
                    buf.as_mut_ptr(),
                    &mut len,
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            match status {
                0 => names.push(String::from_utf16_lossy(&buf[..len as usize])),
                ERROR_NO_MORE_ITEMS => break,
                // A key added between two calls may be longer than any before; skip it.
                ERROR_MORE_DATA => {}
                other => return Err(win32(other)),
            }
        }
        Ok(names)
    }

    /// The string (`REG_SZ` or `REG_EXPAND_SZ`, unexpanded) value `name`, `None` when absent.
    ///
    /// # Errors
    ///
    /// `InvalidData` for a value of another type; the Win32 error otherwise.
    pub(crate) fn string_value(&self, name: &str) -> io::Result<Option<String>> {
        let name = wide(name);
        let mut buf = vec![0_u16; 128];
        loop {
            let mut kind = 0;
            let mut bytes = (buf.len() * 2) as u32;
            // SAFETY: `buf` holds `bytes` bytes and outlives the call; `name` is NUL-terminated.
            let status = unsafe {
                RegQueryValueExW(
                    self.0,
                    name.as_ptr(),
                    std::ptr::null(),
                    &mut kind,
                    buf.as_mut_ptr().cast(),
                    &mut bytes,
                )
            };
            match status {
                0 if kind == REG_SZ || kind == REG_EXPAND_SZ => {
                    let chars = &buf[..(bytes as usize / 2).min(buf.len())];
                    let text = String::from_utf16_lossy(chars);
                    return Ok(Some(text.trim_end_matches('\0').to_owned()));
                }
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not a string value",
                    ));
                }
                ERROR_FILE_NOT_FOUND => return Ok(None),
                // Registry strings are small; cap the growth so a corrupt size cannot make us
                // allocate without bound.
                ERROR_MORE_DATA if bytes <= 65_536 => buf.resize(bytes as usize / 2 + 1, 0),
                other => return Err(win32(other)),
            }
        }
    }
}

impl Drop for RegKey {
    fn drop(&mut self) {
        // SAFETY: we own the key, opened by RegOpenKeyExW, and close it once.
        unsafe { RegCloseKey(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT_VERSION: &str = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion";

    #[test]
    fn reads_a_string_value_and_misses_an_absent_one() {
        let key = RegKey::open_local_machine(CURRENT_VERSION).unwrap();
        let root = key
            .string_value("SystemRoot")
            .unwrap()
            .expect("SystemRoot is set");
        assert!(!root.is_empty() && !root.ends_with('\0'), "{root:?}");
        assert_eq!(key.string_value("lp-no-such-value").unwrap(), None);
    }

    #[test]
    fn lists_subkeys_and_opens_them() {
        let software = RegKey::open_local_machine("SOFTWARE").unwrap();
        let names = software.subkey_names().unwrap();
        assert!(
            names
                .iter()
                .any(|name| name.eq_ignore_ascii_case("Microsoft")),
            "{names:?}"
        );
        assert!(software.open_subkey("Microsoft").is_ok());
        let missing = RegKey::open_local_machine(r"SOFTWARE\lp-no-such-key").unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(ERROR_FILE_NOT_FOUND as i32));
    }
}
