//! Platform numbers (errno values) used to classify kernel errors. Constants only: every call goes through
//! socket2.

#[cfg(unix)]
mod imp {
    pub(crate) const ENOENT: Option<i32> = Some(libc::ENOENT);
    pub(crate) const EADDRNOTAVAIL: Option<i32> = Some(libc::EADDRNOTAVAIL);

    /// `ENOPROTOOPT` (no handler for the option: conntrack not loaded, not TCP, a sandbox) or `EOPNOTSUPP`
    /// (the IPv6 option asked of an IPv4 socket).
    pub(crate) fn is_unsupported_errno(errno: Option<i32>) -> bool {
        matches!(errno, Some(e) if e == libc::ENOPROTOOPT || e == libc::EOPNOTSUPP)
    }

    pub(crate) fn is_permission_errno(errno: Option<i32>) -> bool {
        matches!(errno, Some(e) if e == libc::EPERM || e == libc::EACCES)
    }
}

#[cfg(not(unix))]
mod imp {
    pub(crate) const ENOENT: Option<i32> = None;
    pub(crate) const EADDRNOTAVAIL: Option<i32> = None;

    pub(crate) fn is_unsupported_errno(_: Option<i32>) -> bool {
        false
    }

    pub(crate) fn is_permission_errno(_: Option<i32>) -> bool {
        false
    }
}

pub(crate) use imp::*;
