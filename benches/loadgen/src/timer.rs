//! Waking up on time. tokio's timer wheel has millisecond granularity, far too coarse for a schedule
//! with a request every 50 µs; on Linux the dispatcher sleeps on a `timerfd` (an hrtimer without slack)
//! registered with the tokio reactor instead.

use std::io;
use std::time::Instant;

/// A one-shot high-resolution sleeper, reused for every wait.
#[derive(Debug)]
pub(crate) struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl PreciseTimer {
    /// A timer on `CLOCK_MONOTONIC` (the clock behind [`Instant`] on Linux).
    ///
    /// Must be called inside a tokio runtime with IO enabled.
    #[allow(unsafe_code)]
    pub(crate) fn new() -> io::Result<Self> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        use tokio::io::{Interest, unix::AsyncFd};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: `fd` is an `OwnedFd` fresh from timerfd_create: valid and open. The `AsyncFd` takes
        // ownership of it, this module never replaces it (only `get_ref` is used), and an `OwnedFd`
        // always returns the same descriptor from `as_raw_fd`, so it stays open and the same for the
        // `AsyncFd`'s whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Return at `deadline` (at once if it has passed).
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(());
            }
            let value = Timespec {
                tv_sec: remaining.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: remaining.subsec_nanos().into(),
            };
            let spec = Itimerspec {
                it_interval: Timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: value,
            };
            timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
            // Wait for the expiry. Reading it drains the one-shot timer, so the readiness is cleared right
            // away instead of by an extra EAGAIN read next time.
            loop {
                let mut guard = self.fd.readable().await?;
                let mut expirations = [0u8; 8];
                match guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut expirations).map_err(io::Error::from)) {
                    Ok(Ok(_)) => {
                        guard.clear_ready();
                        break;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl PreciseTimer {
    /// Elsewhere: tokio's timer (millisecond granularity; the send delay statistics show it).
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {})
    }

    /// Return at `deadline` (at once if it has passed), up to a millisecond late.
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        tokio::time::sleep_until(deadline.into()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn never_returns_early() {
        let mut timer = PreciseTimer::new().unwrap();
        for micros in [0, 1, 50, 200, 1500] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            timer.sleep_until(deadline).await.unwrap();
            assert!(Instant::now() >= deadline, "{micros} µs");
        }
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap_or_else(Instant::now);
        timer.sleep_until(past).await.unwrap();
    }
}
