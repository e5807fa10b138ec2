//! The tokio control thread and its bounded channels to the datapath thread.
//!
//! The datapath thread never blocks and never awaits, so it only uses the non-blocking half
//! of each channel: [`DatapathSide::try_send`] for events going up (control-stream bytes,
//! connection events) and [`DatapathSide::try_recv`] for commands coming down. The control
//! thread runs a current-thread tokio runtime and awaits on its halves. Every command sent down
//! calls the datapath's waker (an eventfd that the datapath's io_uring watches), so a command
//! reaches the loop without polling.
//!
//! Both channels are bounded. A full up-channel hands the event back to the datapath, which
//! then stops reading the source of those events (for example the control stream) until there
//! is room: backpressure instead of unbounded memory.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

/// Something that wakes the datapath loop from another thread (an eventfd write on Linux).
pub trait Wake: Send + Sync + 'static {
    /// Wakes the loop. Must not block.
    fn wake(&self);
}

impl<F: Fn() + Send + Sync + 'static> Wake for F {
    fn wake(&self) {
        self()
    }
}

/// Channel capacities.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Events from the datapath to the control thread.
    pub up: usize,
    /// Commands from the control thread to the datapath.
    pub down: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        // Control traffic is a few messages per peer per second; 1024 absorbs a burst of joins
        // without letting a stuck control thread hold more than a few MB.
        Self {
            up: 1024,
            down: 1024,
        }
    }
}

/// The datapath thread's ends of the channels.
#[derive(Debug)]
pub struct DatapathSide<Up, Down> {
    up: mpsc::Sender<Up>,
    down: mpsc::Receiver<Down>,
}

/// Why an event could not go up.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The channel is full; the event is handed back so the caller can retry later.
    #[error("control channel full")]
    Full(T),
    /// The control thread has gone away.
    #[error("control thread has stopped")]
    Closed(T),
}

impl<Up, Down> DatapathSide<Up, Down> {
    /// Sends an event to the control thread without blocking.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] when the channel is full, [`SendError::Closed`] when the control
    /// thread has stopped; both hand the event back.
    pub fn try_send(&self, event: Up) -> Result<(), SendError<Up>> {
        self.up.try_send(event).map_err(|e| match e {
            TrySendError::Full(v) => SendError::Full(v),
            TrySendError::Closed(v) => SendError::Closed(v),
        })
    }

    /// Takes the next command, if any, without blocking. `Err(())` means the control thread has
    /// stopped and no command is left.
    #[expect(
        clippy::result_unit_err,
        reason = "a closed channel carries no further detail"
    )]
    pub fn try_recv(&mut self) -> Result<Option<Down>, ()> {
        match self.down.try_recv() {
            Ok(cmd) => Ok(Some(cmd)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
        }
    }
}

/// The control thread's ends of the channels.
pub struct ControlSide<Up, Down> {
    up: mpsc::Receiver<Up>,
    down: mpsc::Sender<Down>,
    waker: Arc<dyn Wake>,
}

impl<Up, Down> std::fmt::Debug for ControlSide<Up, Down> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSide").finish_non_exhaustive()
    }
}

impl<Up, Down> ControlSide<Up, Down> {
    /// Waits for the next event from the datapath; `None` once the datapath side is gone.
    pub async fn recv(&mut self) -> Option<Up> {
        self.up.recv().await
    }

    /// Sends a command to the datapath and wakes its loop. Waits while the channel is full.
    ///
    /// # Errors
    ///
    /// Hands the command back when the datapath side is gone.
    pub async fn send(&self, cmd: Down) -> Result<(), Down> {
        self.down.send(cmd).await.map_err(|e| e.0)?;
        self.waker.wake();
        Ok(())
    }

    /// A cloneable handle for sending commands from other tasks.
    pub fn commander(&self) -> Commander<Down> {
        Commander {
            down: self.down.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

/// A cloneable sender of commands to the datapath.
pub struct Commander<Down> {
    down: mpsc::Sender<Down>,
    waker: Arc<dyn Wake>,
}

impl<Down> Clone for Commander<Down> {
    fn clone(&self) -> Self {
        Self {
            down: self.down.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl<Down> std::fmt::Debug for Commander<Down> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commander").finish_non_exhaustive()
    }
}

impl<Down> Commander<Down> {
    /// Sends a command and wakes the datapath loop.
    ///
    /// # Errors
    ///
    /// Hands the command back when the datapath side is gone.
    pub async fn send(&self, cmd: Down) -> Result<(), Down> {
        self.down.send(cmd).await.map_err(|e| e.0)?;
        self.waker.wake();
        Ok(())
    }

    /// Sends a command without waiting (for signal handlers and drop paths).
    ///
    /// # Errors
    ///
    /// Hands the command back when the channel is full or the datapath side is gone.
    pub fn try_send(&self, cmd: Down) -> Result<(), Down> {
        self.down.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(v) | TrySendError::Closed(v) => v,
        })?;
        self.waker.wake();
        Ok(())
    }
}

/// The control thread's handle; it yields the task's output, or the error that kept the
/// runtime from starting.
pub type ControlThread<T> = JoinHandle<std::io::Result<T>>;

/// Creates the channel pair without a thread (for tests and for callers that run the control
/// side on a runtime of their own).
pub fn channels<Up, Down>(
    capacity: Capacity,
    waker: impl Wake,
) -> (DatapathSide<Up, Down>, ControlSide<Up, Down>) {
    let (up_tx, up_rx) = mpsc::channel(capacity.up.max(1));
    let (down_tx, down_rx) = mpsc::channel(capacity.down.max(1));
    (
        DatapathSide {
            up: up_tx,
            down: down_rx,
        },
        ControlSide {
            up: up_rx,
            down: down_tx,
            waker: Arc::new(waker),
        },
    )
}

/// Starts the control thread: a current-thread tokio runtime running `task` with the control
/// side of fresh channels. Returns the datapath side and the thread's handle; the thread ends
/// when `task` returns.
///
/// # Errors
///
/// When the thread or the runtime cannot be created.
pub fn spawn<Up, Down, F, Fut, T>(
    name: &str,
    capacity: Capacity,
    waker: impl Wake,
    task: F,
) -> std::io::Result<(DatapathSide<Up, Down>, ControlThread<T>)>
where
    Up: Send + 'static,
    Down: Send + 'static,
    F: FnOnce(ControlSide<Up, Down>) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (datapath, control) = channels(capacity, waker);
    let handle = thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(task(control)))
        })?;
    Ok((datapath, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn commands_wake_the_datapath_and_events_reach_the_control_thread() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let (mut dp, handle) = spawn::<u32, u32, _, _, _>(
            "control-test",
            Capacity { up: 4, down: 4 },
            move || {
                w.fetch_add(1, Ordering::SeqCst);
            },
            |mut ctl| async move {
                // Echo every event back as a command, doubled.
                let mut n = 0;
                while let Some(ev) = ctl.recv().await {
                    ctl.send(ev * 2).await.unwrap();
                    n += 1;
                }
                n
            },
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        for i in 1..=3 {
            dp.try_send(i).unwrap();
            loop {
                assert!(Instant::now() < deadline, "control thread did not answer");
                if let Some(cmd) = dp.try_recv().unwrap() {
                    got.push(cmd);
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got, vec![2, 4, 6]);
        assert_eq!(wakes.load(Ordering::SeqCst), 3);
        drop(dp);
        assert_eq!(handle.join().unwrap().unwrap(), 3);
    }

    #[test]
    fn a_full_up_channel_hands_the_event_back() {
        let (dp, _ctl) = channels::<u8, u8>(Capacity { up: 2, down: 1 }, || {});
        dp.try_send(1).unwrap();
        dp.try_send(2).unwrap();
        assert_eq!(dp.try_send(3), Err(SendError::Full(3)));
    }

    #[test]
    fn a_stopped_control_thread_is_reported() {
        let (mut dp, ctl) = channels::<u8, u8>(Capacity::default(), || {});
        drop(ctl);
        assert_eq!(dp.try_send(1), Err(SendError::Closed(1)));
        assert_eq!(dp.try_recv(), Err(()));
    }
}
