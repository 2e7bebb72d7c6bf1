//! The target URL and the request, encoded once before the run.

use std::fmt;
use std::str::FromStr;

/// An `http://` URL: where to connect and what to ask for.
///
/// ```
/// use meshcap_loadgen::Target;
///
/// let t: Target = "http://10.244.0.6:5000/status?x=1".parse()?;
/// assert_eq!((t.host(), t.port(), t.path()), ("10.244.0.6", 5000, "/status?x=1"));
/// assert_eq!(t.authority(), "10.244.0.6:5000");
/// let t: Target = "http://[fd00::6]".parse()?;
/// assert_eq!((t.host(), t.port(), t.path()), ("fd00::6", 80, "/"));
/// # Ok::<(), meshcap_loadgen::ParseTargetError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 unless the URL names one).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The authority as written in the URL (the default `Host` header).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path and query (the request target), `/` when the URL has none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host:port` for name resolution (IPv6 in brackets).
    pub fn socket_authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// A URL this tool cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseTargetError {
    /// Not an `http://` URL (`https` is not supported).
    #[error("unsupported url `{url}`: expected http://HOST[:PORT][/PATH]")]
    Scheme {
        /// The URL.
        url: String,
    },
    /// The host is empty, has user info, or is a malformed IPv6 literal.
    #[error("invalid host in url `{url}`")]
    Host {
        /// The URL.
        url: String,
    },
    /// The port is not a number in 1..=65535.
    #[error("invalid port in url `{url}`")]
    Port {
        /// The URL.
        url: String,
    },
    /// The path holds a fragment, whitespace or control characters.
    #[error("invalid path in url `{url}`")]
    Path {
        /// The URL.
        url: String,
    },
}

impl FromStr for Target {
    type Err = ParseTargetError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let err_host = || ParseTargetError::Host { url: url.to_owned() };
        let rest = url
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(|| ParseTargetError::Scheme { url: url.to_owned() })?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if path.bytes().any(|b| b == b'#' || b <= b' ' || b == 0x7f) {
            return Err(ParseTargetError::Path { url: url.to_owned() });
        }
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(err_host());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(err_host)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err_host());
            }
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(err_host)?)),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let valid_name = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !authority.starts_with('[') && !valid_name(host) {
            return Err(err_host());
        }
        let port = match port {
            None => 80,
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|&p| p != 0)
                .ok_or_else(|| ParseTargetError::Port { url: url.to_owned() })?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// A header or method this tool will not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The method is not an HTTP token.
    #[error("invalid method `{method}`")]
    Method {
        /// The method.
        method: String,
    },
    /// The header name is not an HTTP token or the value holds CR, LF or NUL.
    #[error("invalid header `{name}: {value}`")]
    Header {
        /// The header name.
        name: String,
        /// The header value.
        value: String,
    },
    /// `Content-Length` and `Transfer-Encoding` are derived from the body, never set by hand.
    #[error("header `{name}` is set by the load generator from the body")]
    FramingHeader {
        /// The header name.
        name: String,
    },
}

/// The request sent on every turn: method, target, extra headers and body, encoded once.
///
/// ```
/// use meshcap_loadgen::Request;
///
/// let req = Request::new("http://127.0.0.1:8080/api".parse()?)
///     .with_method("POST")?
///     .with_header("content-type", "text/plain")?
///     .with_body("hi");
/// assert_eq!(
///     req.encode(),
///     b"POST /api HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    target: Target,
    method: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Request {
    /// A `GET` of `target` with a `host` header and no body.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            method: "GET".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Use `method` instead of `GET`.
    ///
    /// # Errors
    /// [`RequestError::Method`] unless `method` is an HTTP token.
    pub fn with_method(mut self, method: &str) -> Result<Self, RequestError> {
        if !is_token(method) {
            return Err(RequestError::Method {
                method: method.to_owned(),
            });
        }
        self.method = method.to_owned();
        Ok(self)
    }

    /// Add a header; a `host` header replaces the one derived from the URL, a `connection: close`
    /// makes every request open a new connection.
    ///
    /// # Errors
    /// [`RequestError::Header`] for a name that is not a token or a value with CR, LF or NUL;
    /// [`RequestError::FramingHeader`] for `content-length` and `transfer-encoding`.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, RequestError> {
        if !is_token(name) || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(RequestError::Header {
                name: name.to_owned(),
                value: value.to_owned(),
            });
        }
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::FramingHeader { name: name.to_owned() });
        }
        self.headers.push((name.to_owned(), value.trim().to_owned()));
        Ok(self)
    }

    /// Send `body` (with a `content-length`).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether the response carries no body whatever its headers say (`HEAD`).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Whether the request asks the server to close the connection after the response.
    pub fn closes_connection(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection") && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        })
    }

    /// The request's HTTP/1.1 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, self.target.path).as_bytes());
        if !self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            out.extend_from_slice(format!("host: {}\r\n", self.target.authority).as_bytes());
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let t: Target = "HTTP://example.test?q".parse().unwrap();
        assert_eq!(
            (t.host(), t.port(), t.path(), t.authority()),
            ("example.test", 80, "/?q", "example.test")
        );
        assert_eq!(t.to_string(), "http://example.test/?q");
        let t: Target = "http://[::1]:8080/x".parse().unwrap();
        assert_eq!(
            (t.host(), t.port(), t.socket_authority()),
            ("::1", 8080, "[::1]:8080".to_owned())
        );
        let t: Target = "http://127.0.0.1:5000".parse().unwrap();
        assert_eq!(t.socket_authority(), "127.0.0.1:5000");
    }

    #[test]
    fn bad_urls_name_the_url() {
        for (url, what) in [
            (
                "https://a/",
                "unsupported url `https://a/`: expected http://HOST[:PORT][/PATH]",
            ),
            ("a:80", "unsupported url `a:80`: expected http://HOST[:PORT][/PATH]"),
            ("http:///x", "invalid host in url `http:///x`"),
            ("http://u@h/", "invalid host in url `http://u@h/`"),
            ("http://[::1/", "invalid host in url `http://[::1/`"),
            ("http://[zz]/", "invalid host in url `http://[zz]/`"),
            ("http://[::1]x/", "invalid host in url `http://[::1]x/`"),
            ("http://h:0/", "invalid port in url `http://h:0/`"),
            ("http://h:/", "invalid port in url `http://h:/`"),
            ("http://h:65536/", "invalid port in url `http://h:65536/`"),
            ("http://h:+80/", "invalid port in url `http://h:+80/`"),
            ("http://h/a b", "invalid path in url `http://h/a b`"),
            ("http://h/#f", "invalid path in url `http://h/#f`"),
            ("http://é/", "invalid host in url `http://é/`"),
        ] {
            assert_eq!(url.parse::<Target>().unwrap_err().to_string(), what);
        }
    }

    #[test]
    fn default_request_is_a_keep_alive_get() {
        let req = Request::new("http://10.244.0.6:5000/".parse().unwrap());
        assert_eq!(req.encode(), b"GET / HTTP/1.1\r\nhost: 10.244.0.6:5000\r\n\r\n");
        assert!(!req.closes_connection() && !req.is_head());
    }

    #[test]
    fn headers_are_checked_and_host_can_be_replaced() {
        let req = Request::new("http://127.0.0.1/".parse().unwrap())
            .with_method("HEAD")
            .unwrap()
            .with_header("Host", "svc.mesh")
            .unwrap()
            .with_header("Connection", " keep-alive, Close ")
            .unwrap();
        assert_eq!(
            req.encode(),
            b"HEAD / HTTP/1.1\r\nHost: svc.mesh\r\nConnection: keep-alive, Close\r\n\r\n"
        );
        assert!(req.closes_connection() && req.is_head());
        let req = Request::new("http://127.0.0.1/".parse().unwrap());
        assert_eq!(
            req.clone().with_header("x", "a\r\nb").unwrap_err().to_string(),
            "invalid header `x: a\r\nb`"
        );
        assert!(req.clone().with_header("bad name", "v").is_err());
        assert_eq!(
            req.clone().with_header("Content-Length", "1").unwrap_err().to_string(),
            "header `Content-Length` is set by the load generator from the body"
        );
        assert_eq!(
            req.clone().with_method("GE T").unwrap_err().to_string(),
            "invalid method `GE T`"
        );
        let post = req.with_method("POST").unwrap();
        assert_eq!(
            post.encode(),
            b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
