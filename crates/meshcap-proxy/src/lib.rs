//! meshcap-proxy: see the workspace README. (Scaffold: the crate's contents land with its issue.)
