//! The session state machine with a simulated clock.

use std::time::{Duration, Instant};

use lanparty_control::session::{Action, Input, Session, SessionConfig, State};
use lanparty_datapath::Mac;

const MAC: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

fn session(now: Instant, seed: u64) -> Session {
    Session::new(
        now,
        SessionConfig::new("relay.example:4433", "ROOM", MAC, seed),
    )
}

fn actions(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn lost(reason: &str) -> Input {
    Input::ConnectionLost {
        reason: reason.to_owned(),
    }
}

fn backoff_delay(s: &Session) -> Duration {
    match s.state() {
        State::Backoff { delay, .. } => *delay,
        other => panic!("not backing off: {other:?}"),
    }
}

/// Fails `n` connection attempts in a row; returns the delays chosen and the final time.
fn fail_attempts(s: &mut Session, mut now: Instant, n: usize) -> (Vec<Duration>, Instant) {
    let mut delays = Vec::new();
    for _ in 0..n {
        s.handle_input(now, lost("relay unreachable"));
        delays.push(backoff_delay(s));
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        assert_eq!(actions(s), [Action::Connect]);
    }
    (delays, now)
}

#[test]
fn starts_by_connecting_and_joins_after_welcome() {
    let now = Instant::now();
    let mut s = session(now, 1);
    assert_eq!(actions(&mut s), [Action::Connect]);
    assert_eq!(s.status(), "connecting to relay.example:4433");
    s.handle_input(now, Input::Connected);
    assert!(matches!(s.state(), State::AwaitWelcome { .. }));
    assert_eq!(
        s.status(),
        "connected to relay.example:4433, joining room ROOM"
    );
    s.handle_input(now, Input::Welcome { peers: 3 });
    assert!(s.is_joined());
    assert_eq!(
        s.status(),
        "joined room ROOM as MAC 02:11:22:33:44:55 with 3 peers"
    );
    s.handle_input(now, Input::PeersChanged { peers: 1 });
    assert_eq!(
        s.status(),
        "joined room ROOM as MAC 02:11:22:33:44:55 with 1 peer"
    );
    assert_eq!(s.poll_timeout(), None, "no timer while joined");
    assert!(actions(&mut s).is_empty());
}

#[test]
fn lost_connection_backs_off_and_reconnects() {
    let now = Instant::now();
    let mut s = session(now, 2);
    actions(&mut s);
    s.handle_input(now, lost("relay unreachable"));
    let delay = backoff_delay(&s);
    assert!(
        delay >= Duration::from_millis(800) && delay <= Duration::from_millis(1200),
        "{delay:?}"
    );
    assert_eq!(s.status(), "relay unreachable, retrying in 1 s");
    assert_eq!(s.poll_timeout(), Some(now + delay));
    s.handle_timeout(now + delay - Duration::from_millis(1));
    assert!(actions(&mut s).is_empty(), "not before the delay");
    s.handle_timeout(now + delay);
    assert_eq!(actions(&mut s), [Action::Connect]);
    assert!(matches!(s.state(), State::Connecting { .. }));
}

#[test]
fn backoff_doubles_with_jitter_and_caps_at_30_s() {
    let now = Instant::now();
    let mut s = session(now, 3);
    actions(&mut s);
    let (delays, _) = fail_attempts(&mut s, now, 9);
    for (delay, base) in delays.iter().zip([1u64, 2, 4, 8, 16, 30, 30, 30, 30]) {
        let base = Duration::from_secs(base);
        assert!(
            *delay >= base.mul_f64(0.8) && *delay <= base.mul_f64(1.2).min(Duration::from_secs(30)),
            "delay {delay:?} for base {base:?}"
        );
    }
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
    assert_eq!(s.failures(), 9);
}

#[test]
fn status_shows_the_rounded_up_delay() {
    let now = Instant::now();
    let mut s = session(now, 4);
    actions(&mut s);
    let (_, t) = fail_attempts(&mut s, now, 2);
    s.handle_input(t, lost("relay unreachable"));
    let secs = backoff_delay(&s).as_millis().div_ceil(1000);
    assert!((4..=5).contains(&secs), "{secs}");
    assert_eq!(
        s.status(),
        format!("relay unreachable, retrying in {secs} s")
    );
}

#[test]
fn same_seed_same_delays_other_seed_other_delays() {
    let now = Instant::now();
    let run = |seed| {
        let mut s = session(now, seed);
        actions(&mut s);
        fail_attempts(&mut s, now, 6).0
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn backoff_resets_after_a_stable_session() {
    let now = Instant::now();
    let mut s = session(now, 7);
    actions(&mut s);
    let (_, t) = fail_attempts(&mut s, now, 5);
    s.handle_input(t, Input::Connected);
    s.handle_input(t, Input::Welcome { peers: 0 });
    let later = t + Duration::from_secs(61);
    s.handle_input(later, lost("connection timed out"));
    assert_eq!(s.failures(), 1);
    assert!(backoff_delay(&s) <= Duration::from_millis(1200));
}

#[test]
fn a_session_that_drops_at_once_keeps_backing_off() {
    let now = Instant::now();
    let mut s = session(now, 8);
    actions(&mut s);
    let (_, t) = fail_attempts(&mut s, now, 4);
    s.handle_input(t, Input::Connected);
    s.handle_input(t, Input::Welcome { peers: 0 });
    s.handle_input(t + Duration::from_secs(2), lost("connection lost"));
    assert_eq!(s.failures(), 5);
    assert!(backoff_delay(&s) >= Duration::from_millis(12_800));
}

#[test]
fn fatal_reject_stops_retrying() {
    let now = Instant::now();
    let mut s = session(now, 9);
    actions(&mut s);
    s.handle_input(now, Input::Connected);
    s.handle_input(
        now,
        Input::Rejected {
            code: "bad_secret".to_owned(),
            reason: "room secret rejected".to_owned(),
            fatal: true,
        },
    );
    assert_eq!(actions(&mut s), [Action::Close]);
    assert!(s.is_finished());
    assert_eq!(s.status(), "rejected: room secret rejected");
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(now + Duration::from_secs(3600));
    s.handle_input(now, lost("relay unreachable"));
    assert!(actions(&mut s).is_empty(), "never connects again");
    assert!(matches!(s.state(), State::Rejected { code, .. } if code == "bad_secret"));
}

#[test]
fn transient_reject_retries() {
    let now = Instant::now();
    let mut s = session(now, 10);
    actions(&mut s);
    s.handle_input(now, Input::Connected);
    s.handle_input(
        now,
        Input::Rejected {
            code: "room_full".to_owned(),
            reason: "room full".to_owned(),
            fatal: false,
        },
    );
    assert_eq!(actions(&mut s), [Action::Close]);
    assert!(s.status().starts_with("room full, retrying in "));
    let t = s.poll_timeout().unwrap();
    s.handle_timeout(t);
    assert_eq!(actions(&mut s), [Action::Connect]);
}

#[test]
fn handshake_timeout_closes_and_backs_off() {
    let now = Instant::now();
    let mut s = session(now, 11);
    actions(&mut s);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(10)));
    s.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(actions(&mut s), [Action::Close]);
    assert!(
        s.status()
            .starts_with("relay did not answer within 10 s, retrying in "),
        "{}",
        s.status()
    );
    let t = s.poll_timeout().unwrap();
    s.handle_timeout(t);
    actions(&mut s);
    s.handle_input(t, Input::Connected);
    s.handle_timeout(t + Duration::from_secs(10));
    assert!(s.status().starts_with("relay did not welcome us"));
}

#[test]
fn close_stops_for_good() {
    let now = Instant::now();
    let mut s = session(now, 12);
    actions(&mut s);
    s.handle_input(now, Input::Connected);
    s.handle_input(now, Input::Welcome { peers: 2 });
    s.close();
    assert_eq!(actions(&mut s), [Action::Close]);
    assert_eq!(s.status(), "disconnected");
    s.handle_input(now, lost("connection closed"));
    assert!(actions(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn stale_inputs_are_ignored() {
    let now = Instant::now();
    let mut s = session(now, 13);
    actions(&mut s);
    s.handle_input(now, lost("relay unreachable"));
    let before = s.state().clone();
    // A late loss report for the same connection must not stack another backoff.
    s.handle_input(now, lost("relay unreachable"));
    s.handle_input(now, Input::Welcome { peers: 1 });
    assert_eq!(s.state(), &before);
    assert_eq!(s.failures(), 1);
}
