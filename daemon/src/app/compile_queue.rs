//! Fair turns at the compilers: a few compiles run at once, a bounded number
//! wait, each caller (an account, or a client address for anonymous callers)
//! has at most one compile running or waiting, and compile time is shared out
//! by account and by client address.
//!
//! Each account and each address has a share of compiler CPU time within a
//! sliding window ([`Share`]). A compile counts against its account and its
//! address as the most it may use (the per-compile limit) from the moment it
//! is admitted, running or waiting, and as the CPU time its process tree
//! really used once it has ended. The line is ordered in three classes,
//! first come first served within each:
//!
//! 1. the holder of a session in progress, never refused for a full line nor
//!    held back for a share (the compiles still count);
//! 2. callers whose compile keeps their account and address within share;
//! 3. callers over a share. When the line is full, the last of these gives
//!    its place to a newcomer of class 2 and is refused with a time to come
//!    back; a newcomer over a share finds no place.
//!
//! A caller that has already used [`FAR_OVER`] times a share is refused at
//! once, until enough of that time has left the window.
//!
//! Why wait and give way rather than refuse whenever a share is used: a
//! compile over share costs nobody anything while nobody else is waiting (a
//! class behind one address still compiles on a quiet evening), but as soon
//! as an honest student arrives, the over-share compiles are the ones that
//! wait or go. Counting admitted compiles at their limit before they run is
//! what catches a flood before any of it has been measured: twenty accounts
//! on one address fill their address's share with the first few compiles,
//! and the rest of them line up behind everyone else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A caller that has used this many times a share is refused outright.
pub const FAR_OVER: u32 = 2;
/// When to come back to a full line: a compile takes seconds, and by then a
/// place has likely come free.
const BUSY_RETRY: Duration = Duration::from_secs(5);
/// Accounts and addresses tracked at most before the idle ones are dropped.
const MAX_TRACKED: usize = 10_000;

/// Whose share a compile counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Payer {
    Account(String),
    Address(IpAddr),
}

/// Which share a refused caller is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareOf {
    Account,
    Address,
}

impl Payer {
    fn share_of(&self) -> ShareOf {
        match self {
            Payer::Account(_) => ShareOf::Account,
            Payer::Address(_) => ShareOf::Address,
        }
    }
}

/// Why a compile could not take its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The caller already has a compile running or waiting.
    AlreadyQueued,
    /// Every waiting place is taken, by callers within their shares.
    Full,
    /// The caller's account or address is over its share of compile time:
    /// far over it, or over it while the line is full.
    OverShare { of: ShareOf, retry_after: Duration },
}

/// The sharing rules in force (`[compile]`), read for each compile so that a
/// reload applies at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Compiles that may wait while the compilers are busy.
    pub max_waiting: usize,
    /// How far back compile time counts.
    pub window: Duration,
    /// CPU time each account may use within the window.
    pub per_account: Duration,
    /// CPU time each client address may use within the window.
    pub per_address: Duration,
    /// What an admitted compile counts as until its CPU time is known: the
    /// most one of its processes may use.
    pub reserve: Duration,
}

impl Share {
    fn limit(&self, payer: &Payer) -> Duration {
        match payer {
            Payer::Account(_) => self.per_account,
            Payer::Address(_) => self.per_address,
        }
    }
}

/// Who asks for a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask<'a> {
    /// The caller's account, when it sent a token.
    pub account: Option<&'a str>,
    /// The client's address, when the compile comes from a request that has one.
    pub address: Option<IpAddr>,
    /// The holder of a session in progress.
    pub urgent: bool,
}

impl Ask<'_> {
    /// Who asks, in the log: the account, else the address.
    pub fn name(&self) -> String {
        match (self.account, self.address) {
            (Some(email), _) => email.to_owned(),
            (None, Some(address)) => address.to_string(),
            (None, None) => String::new(),
        }
    }

    /// Who may have one compile running or waiting: the account, else the address.
    fn caller(&self) -> Option<Payer> {
        self.payers().into_iter().next()
    }

    fn payers(&self) -> Vec<Payer> {
        let account = self.account.map(|email| Payer::Account(email.to_owned()));
        account.into_iter().chain(self.address.map(Payer::Address)).collect()
    }
}

/// Where a caller stands in line; the lower goes first.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Class {
    Holder,
    WithinShare,
    /// Over the share of this payer.
    OverShare(Payer),
}

impl Class {
    fn rank(&self) -> u8 {
        match self {
            Class::Holder => 0,
            Class::WithinShare => 1,
            Class::OverShare(_) => 2,
        }
    }
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    class: Class,
    caller: Option<Payer>,
    /// `Ok` hands over a turn; `Err` sends the waiter away to make room.
    grant: oneshot::Sender<Result<(), Refused>>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    /// Ordered by class, then by arrival.
    waiting: VecDeque<Waiter>,
    /// Callers with a compile running or waiting.
    callers: HashSet<Payer>,
    next_id: u64,
    ledger: Ledger,
}

/// The compile queue.
#[derive(Debug)]
pub struct CompileQueue {
    state: Arc<Mutex<State>>,
    max_running: usize,
}

/// A turn at a compiler; the next waiter gets it when this is dropped.
#[derive(Debug)]
pub struct Turn {
    state: Arc<Mutex<State>>,
    caller: Option<Payer>,
}

/// What one admitted compile costs its account and address. It counts at
/// the per-compile limit until [`Meter::charge`] says what it really used;
/// dropped uncharged (the compile never ran, or its caller gave up waiting),
/// it stops counting.
#[derive(Debug)]
pub struct Meter {
    state: Arc<Mutex<State>>,
    payers: Vec<Payer>,
    window: Duration,
    charged: bool,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl CompileQueue {
    pub fn new(max_running: usize) -> CompileQueue {
        CompileQueue { state: Arc::default(), max_running: max_running.max(1) }
    }

    /// Compiles running, and waiting for a turn.
    pub fn counts(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.running, state.waiting.len())
    }

    /// Waits for a turn for `ask`, placed in line by its class (see the
    /// module's comment); `now` is when it asks.
    pub async fn turn(&self, ask: Ask<'_>, share: &Share, now: Instant) -> Result<(Turn, Meter), Refused> {
        let caller = ask.caller();
        let payers = ask.payers();
        let (id, granted, meter) = {
            let mut state = lock(&self.state);
            if caller.as_ref().is_some_and(|c| state.callers.contains(c)) {
                return Err(Refused::AlreadyQueued);
            }
            let class = if ask.urgent { Class::Holder } else { classify(&mut state.ledger, &payers, share, now)? };
            let runs_now = state.running < self.max_running;
            if !runs_now && class != Class::Holder && state.waiting.len() >= share.max_waiting {
                make_room(&mut state, &class, share, now)?;
            }
            if let Some(caller) = &caller {
                state.callers.insert(caller.clone());
            }
            for payer in &payers {
                state.ledger.reserve(payer);
            }
            let meter = Meter { state: Arc::clone(&self.state), payers, window: share.window, charged: false };
            if runs_now {
                state.running += 1;
                return Ok((Turn { state: Arc::clone(&self.state), caller }, meter));
            }
            let (grant, granted) = oneshot::channel();
            state.next_id += 1;
            let id = state.next_id;
            let at = state.waiting.iter().take_while(|w| w.class.rank() <= class.rank()).count();
            state.waiting.insert(at, Waiter { id, class, caller: caller.clone(), grant });
            (id, granted, meter)
        };
        // If this future is dropped while waiting, the guard takes it out of
        // the line (or, if the turn was granted meanwhile, passes it on).
        let mut leaving = Leaving { state: &self.state, id, caller: caller.clone(), granted, done: false };
        let outcome = (&mut leaving.granted).await;
        leaving.done = true;
        match outcome {
            Ok(Ok(())) => Ok((Turn { state: Arc::clone(&self.state), caller }, meter)),
            // Sent away to make room: the one who did took it out of the line.
            Ok(Err(refused)) => Err(refused),
            // The queue itself is gone: nothing runs any more.
            Err(_) => Err(Refused::Full),
        }
    }
}

/// The class of a caller who is not a session holder, or its refusal when it
/// is far over a share.
fn classify(ledger: &mut Ledger, payers: &[Payer], share: &Share, now: Instant) -> Result<Class, Refused> {
    let mut class = Class::WithinShare;
    let mut far_over: Option<Refused> = None;
    for payer in payers {
        let limit = share.limit(payer);
        let used = ledger.used(payer, now, share.window);
        if used >= limit.saturating_mul(FAR_OVER) {
            let retry_after = ledger.under_in(payer, limit, now, share.window).max(Duration::from_secs(1));
            // Over two shares, the caller waits for the later of them.
            if far_over.is_none_or(|r| matches!(r, Refused::OverShare { retry_after: t, .. } if t < retry_after)) {
                far_over = Some(Refused::OverShare { of: payer.share_of(), retry_after });
            }
        } else if class == Class::WithinShare && ledger.standing(payer, share.reserve) + share.reserve > limit {
            class = Class::OverShare(payer.clone());
        }
    }
    match far_over {
        Some(refused) => Err(refused),
        None => Ok(class),
    }
}

/// Makes a place in a full line for a newcomer of `class`: the last waiter
/// over its share is sent away for one within its share; otherwise the
/// newcomer is refused.
fn make_room(state: &mut State, class: &Class, share: &Share, now: Instant) -> Result<(), Refused> {
    if let Class::OverShare(payer) = class {
        return Err(come_back(&mut state.ledger, payer, share, now));
    }
    let Some(at) = state.waiting.iter().rposition(|w| matches!(w.class, Class::OverShare(_))) else {
        return Err(Refused::Full);
    };
    let Some(evicted) = state.waiting.remove(at) else { return Err(Refused::Full) };
    if let Some(caller) = &evicted.caller {
        state.callers.remove(caller);
    }
    if let Class::OverShare(payer) = &evicted.class {
        let refused = come_back(&mut state.ledger, payer, share, now);
        tracing::info!(caller = ?evicted.caller, over = ?refused, "a compile over its share gave its place to one within");
        let _ = evicted.grant.send(Err(refused));
    }
    Ok(())
}

/// The refusal of a caller over `payer`'s share at a full line: come back
/// when its measured use is under the share again, or when a place has
/// likely come free, whichever is later.
fn come_back(ledger: &mut Ledger, payer: &Payer, share: &Share, now: Instant) -> Refused {
    let under = ledger.under_in(payer, share.limit(payer), now, share.window);
    Refused::OverShare { of: payer.share_of(), retry_after: under.max(BUSY_RETRY) }
}

/// Takes a waiter that gave up out of the line.
struct Leaving<'q> {
    state: &'q Mutex<State>,
    id: u64,
    caller: Option<Payer>,
    granted: oneshot::Receiver<Result<(), Refused>>,
    done: bool,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = lock(self.state);
        if let Some(at) = state.waiting.iter().position(|w| w.id == self.id) {
            drop(state.waiting.remove(at));
            if let Some(caller) = &self.caller {
                state.callers.remove(caller);
            }
            return;
        }
        // Out of the line already: grants and evictions are sent under the
        // lock held here, so the answer is in the channel.
        if let Ok(Ok(())) = self.granted.try_recv() {
            // Granted just before it gave up: the turn it was handed goes on.
            if let Some(caller) = &self.caller {
                state.callers.remove(caller);
            }
            pass_on(&mut state);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if let Some(caller) = &self.caller {
            state.callers.remove(caller);
        }
        pass_on(&mut state);
    }
}

/// Hands a finished turn to the first waiter still waiting, or frees it.
fn pass_on(state: &mut State) {
    while let Some(waiter) = state.waiting.pop_front() {
        if waiter.grant.send(Ok(())).is_ok() {
            return;
        }
    }
    state.running = state.running.saturating_sub(1);
}

impl Meter {
    /// The compile used `cpu` (user and system time of its process tree),
    /// ending at `now`: that counts against its account and address for the
    /// window, instead of the per-compile limit.
    pub fn charge(mut self, cpu: Duration, now: Instant) {
        self.charged = true;
        let mut state = lock(&self.state);
        for payer in &self.payers {
            state.ledger.settle(payer, Some((now, cpu)), now, self.window);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.charged {
            return;
        }
        let mut state = lock(&self.state);
        for payer in &self.payers {
            state.ledger.settle(payer, None, Instant::now(), self.window);
        }
    }
}

/// Compile CPU time per account and per address within a sliding window.
#[derive(Debug, Default)]
struct Ledger {
    spent: HashMap<Payer, Spent>,
}

#[derive(Debug, Default)]
struct Spent {
    /// When each compile ended and the CPU time it used, oldest first.
    charges: VecDeque<(Instant, Duration)>,
    /// The sum of `charges`.
    used: Duration,
    /// Compiles admitted whose CPU time is not known yet.
    in_flight: u32,
}

impl Spent {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, cpu)) = self.charges.front() {
            if now.saturating_duration_since(at) < window {
                break;
            }
            self.charges.pop_front();
            self.used = self.used.saturating_sub(cpu);
        }
    }

    fn is_idle(&self) -> bool {
        self.charges.is_empty() && self.in_flight == 0
    }
}

impl Ledger {
    /// CPU time `payer`'s compiles used within the window before `now`.
    fn used(&mut self, payer: &Payer, now: Instant, window: Duration) -> Duration {
        let Some(spent) = self.spent.get_mut(payer) else { return Duration::ZERO };
        spent.expire(now, window);
        spent.used
    }

    /// What `payer` stands charged with: its measured use (as of the last
    /// [`Ledger::used`]) and `reserve` for each compile still in flight.
    fn standing(&self, payer: &Payer, reserve: Duration) -> Duration {
        self.spent.get(payer).map_or(Duration::ZERO, |s| s.used + reserve.saturating_mul(s.in_flight))
    }

    /// How long until `payer`'s measured use drops under `limit`, as the
    /// oldest compiles leave the window.
    fn under_in(&mut self, payer: &Payer, limit: Duration, now: Instant, window: Duration) -> Duration {
        let Some(spent) = self.spent.get_mut(payer) else { return Duration::ZERO };
        spent.expire(now, window);
        let mut used = spent.used;
        for &(at, cpu) in &spent.charges {
            if used < limit {
                break;
            }
            used = used.saturating_sub(cpu);
            if used < limit {
                return (at + window).saturating_duration_since(now);
            }
        }
        Duration::ZERO
    }

    fn reserve(&mut self, payer: &Payer) {
        self.spent.entry(payer.clone()).or_default().in_flight += 1;
    }

    /// One of `payer`'s compiles in flight has ended, having used `charge`
    /// (none when it never ran).
    fn settle(&mut self, payer: &Payer, charge: Option<(Instant, Duration)>, now: Instant, window: Duration) {
        if let Some(spent) = self.spent.get_mut(payer) {
            spent.in_flight = spent.in_flight.saturating_sub(1);
            if let Some((at, cpu)) = charge {
                spent.charges.push_back((at, cpu));
                spent.used += cpu;
            }
            spent.expire(now, window);
            if spent.is_idle() {
                self.spent.remove(payer);
            }
        }
        if self.spent.len() > MAX_TRACKED {
            self.spent.retain(|_, spent| {
                spent.expire(now, window);
                !spent.is_idle()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Two waiting places; 10 CPU-seconds per account and 20 per address in
    /// ten minutes; a compile counts 5 until measured.
    const SHARE: Share =
        Share { max_waiting: 2, window: secs(600), per_account: secs(10), per_address: secs(20), reserve: secs(5) };

    fn address(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn from(account: &str, last: u8) -> Ask<'_> {
        Ask { account: Some(account), address: Some(address(last)), urgent: false }
    }

    fn holder(account: &str, last: u8) -> Ask<'_> {
        Ask { urgent: true, ..from(account, last) }
    }

    /// Whether `refused` is a share refusal of `of`; its time to come back.
    fn over(refused: Refused, of: ShareOf) -> Duration {
        match refused {
            Refused::OverShare { of: o, retry_after } if o == of => retry_after,
            other => panic!("expected a refusal over the {of:?} share, got {other:?}"),
        }
    }

    /// Runs one compile for `ask` to its end at `now`, charged `cpu`.
    async fn compiled(queue: &CompileQueue, ask: Ask<'_>, cpu: Duration, now: Instant) {
        let (turn, meter) = queue.turn(ask, &SHARE, now).await.unwrap();
        meter.charge(cpu, now);
        drop(turn);
    }

    /// Starts a compile for `ask` under `share` and returns once it is
    /// admitted (running, or in line) or refused; the task records `who` in
    /// `order` when its turn comes, or ends with its refusal.
    async fn wait(
        queue: &Arc<CompileQueue>,
        order: &Arc<Mutex<Vec<String>>>,
        who: &'static str,
        ask: Ask<'static>,
        share: Share,
        now: Instant,
    ) -> tokio::task::JoinHandle<Result<(), Refused>> {
        let (in_line, order) = (Arc::clone(queue), Arc::clone(order));
        let task = tokio::spawn(async move {
            let (turn, _meter) = in_line.turn(ask, &share, now).await?;
            order.lock().unwrap().push(who.to_owned());
            drop(turn);
            Ok(())
        });
        let caller = ask.caller().expect("a caller");
        while !task.is_finished() && !lock(&queue.state).callers.contains(&caller) {
            tokio::task::yield_now().await;
        }
        assert!(!task.is_finished(), "{who} was refused");
        task
    }

    #[tokio::test]
    async fn one_turn_per_caller_a_bounded_line_and_urgent_callers_first() {
        let now = Instant::now();
        let queue = Arc::new(CompileQueue::new(1));
        let share = Share { max_waiting: 2, ..SHARE };
        let (first, _meter) = queue.turn(from("ada", 1), &share, now).await.unwrap();
        // Ada may not queue a second compile while her first runs.
        assert_eq!(queue.turn(from("ada", 1), &share, now).await.unwrap_err(), Refused::AlreadyQueued);
        let order = Arc::new(Mutex::new(Vec::new()));
        let bob = wait(&queue, &order, "bob", from("bob", 2), share, now).await;
        let hana = wait(&queue, &order, "hana", holder("hana", 3), share, now).await;
        // Two wait already: a third is refused at once.
        assert_eq!(queue.turn(from("carol", 4), &share, now).await.unwrap_err(), Refused::Full);
        drop(first);
        hana.await.unwrap().unwrap();
        bob.await.unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), ["hana", "bob"]);
        // Everyone is done: turns are free again.
        drop(queue.turn(from("ada", 1), &share, now).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_who_gives_up_leaves_the_line() {
        let now = Instant::now();
        let queue = CompileQueue::new(1);
        let running = queue.turn(from("ada", 1), &SHARE, now).await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(10), queue.turn(from("bob", 2), &SHARE, now)).await;
        assert!(gave_up.is_err());
        // Bob's place is free and he may queue again.
        assert_eq!(queue.counts(), (1, 0));
        let bob = queue.turn(from("bob", 2), &SHARE, now);
        drop(running);
        drop(bob.await.unwrap());
    }

    #[test]
    fn compile_time_counts_per_account_and_address_over_a_sliding_window() {
        let start = Instant::now();
        let mut ledger = Ledger::default();
        let (ada, home) = (Payer::Account("ada".into()), Payer::Address(address(1)));
        for payer in [&ada, &home] {
            ledger.reserve(payer);
        }
        // In flight, a compile stands at the per-compile limit; nothing is measured yet.
        assert_eq!(ledger.standing(&ada, secs(5)), secs(5));
        assert_eq!(ledger.used(&ada, start, secs(600)), Duration::ZERO);
        for payer in [&ada, &home] {
            ledger.settle(payer, Some((start, secs(3))), start, secs(600));
        }
        ledger.reserve(&ada);
        ledger.settle(&ada, Some((start + secs(100), secs(4))), start + secs(100), secs(600));
        assert_eq!(ledger.used(&ada, start + secs(100), secs(600)), secs(7));
        assert_eq!(ledger.used(&home, start + secs(100), secs(600)), secs(3));
        assert_eq!(ledger.standing(&ada, secs(5)), secs(7), "nothing in flight any more");
        // Under 5 s again once the first compile leaves the window, at 600 s.
        assert_eq!(ledger.under_in(&ada, secs(5), start + secs(100), secs(600)), secs(500));
        assert_eq!(ledger.under_in(&ada, secs(8), start + secs(100), secs(600)), Duration::ZERO);
        // The window slides: the first compile no longer counts, then neither does the second.
        assert_eq!(ledger.used(&ada, start + secs(600), secs(600)), secs(4));
        assert_eq!(ledger.used(&ada, start + secs(700), secs(600)), Duration::ZERO);
        // A compile that never ran costs nothing, and idle payers are forgotten.
        ledger.reserve(&home);
        ledger.settle(&home, None, start + secs(700), secs(600));
        ledger.reserve(&ada);
        ledger.settle(&ada, None, start + secs(700), secs(600));
        assert!(ledger.spent.is_empty(), "{:?}", ledger.spent);
    }

    #[tokio::test]
    async fn an_account_far_over_its_share_is_refused_until_its_time_leaves_the_window() {
        let start = Instant::now();
        let queue = CompileQueue::new(2);
        compiled(&queue, from("ada", 1), secs(12), start).await;
        compiled(&queue, from("ada", 1), secs(9), start + secs(60)).await;
        // 21 s used, twice her 10 s share: refused, until the first compile
        // leaves the window and she is under her share again.
        let refused = queue.turn(from("ada", 1), &SHARE, start + secs(90)).await.unwrap_err();
        assert_eq!(over(refused, ShareOf::Account), secs(510));
        // Bob, on the same address, is not: it has used 21 s, not yet twice its 20.
        drop(queue.turn(from("bob", 1), &SHARE, start + secs(90)).await.unwrap());
        // Anonymous compiles from the address count against it alone.
        let anonymous = Ask { account: None, address: Some(address(1)), urgent: false };
        compiled(&queue, anonymous, secs(20), start + secs(100)).await;
        let refused = queue.turn(from("carol", 1), &SHARE, start + secs(110)).await.unwrap_err();
        // 41 s used: under its 20 s again once the anonymous compile leaves the window too.
        assert_eq!(over(refused, ShareOf::Address), secs(590));
        // A session holder is never refused for a share, and her compile still counts.
        let (turn, meter) = queue.turn(holder("ada", 1), &SHARE, start + secs(120)).await.unwrap();
        meter.charge(secs(1), start + secs(120));
        drop(turn);
        assert_eq!(
            lock(&queue.state).ledger.used(&Payer::Account("ada".into()), start + secs(120), secs(600)),
            secs(22)
        );
        // Once the window has slid past, everyone compiles again.
        drop(queue.turn(from("ada", 1), &SHARE, start + secs(700)).await.unwrap());
    }

    #[tokio::test]
    async fn a_flood_from_one_address_waits_behind_and_gives_way_to_an_honest_student() {
        let now = Instant::now();
        let queue = Arc::new(CompileQueue::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        // Fresh accounts on one address with 10 s of share, 5 s counted per compile in flight.
        let share = Share { per_address: secs(10), ..SHARE };
        let (running, _meter) = queue.turn(from("f1", 1), &share, now).await.unwrap();
        let f2 = wait(&queue, &order, "f2", from("f2", 1), share, now).await;
        // With two compiles in flight the address is at 10 s: a third would pass its share.
        let f3 = wait(&queue, &order, "f3", from("f3", 1), share, now).await;
        assert_eq!(queue.counts(), (1, 2));
        // The line is full and f4 is over its address's share: no place for it.
        let refused = queue.turn(from("f4", 1), &share, now).await.unwrap_err();
        assert_eq!(over(refused, ShareOf::Address), BUSY_RETRY);
        // An honest student from another address takes f3's place, and f3 is told to come back.
        let ada = wait(&queue, &order, "ada", from("ada", 2), share, now).await;
        assert_eq!(over(f3.await.unwrap().unwrap_err(), ShareOf::Address), BUSY_RETRY);
        assert_eq!(queue.counts(), (1, 2));
        // Nobody over a share is left to give way: the next honest student finds the line full.
        assert_eq!(queue.turn(from("bob", 3), &share, now).await.unwrap_err(), Refused::Full);
        drop(running);
        f2.await.unwrap().unwrap();
        ada.await.unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), ["f2", "ada"]);
    }

    #[tokio::test]
    async fn callers_within_their_share_go_ahead_of_those_over_it_and_holders_first() {
        let now = Instant::now();
        let queue = Arc::new(CompileQueue::new(1));
        let share = Share { max_waiting: 10, ..SHARE };
        // Eve has measured 8 s: with a compile counted at 5 s she would pass her 10.
        let (turn, meter) = queue.turn(from("eve", 9), &share, now).await.unwrap();
        meter.charge(secs(8), now);
        drop(turn);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (running, _meter) = queue.turn(from("zed", 1), &share, now).await.unwrap();
        let eve = wait(&queue, &order, "eve", from("eve", 9), share, now).await;
        let bob = wait(&queue, &order, "bob", from("bob", 2), share, now).await;
        let hana = wait(&queue, &order, "hana", holder("hana", 3), share, now).await;
        let carol = wait(&queue, &order, "carol", from("carol", 4), share, now).await;
        drop(running);
        for task in [eve, bob, hana, carol] {
            task.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["hana", "bob", "carol", "eve"]);
    }
}
