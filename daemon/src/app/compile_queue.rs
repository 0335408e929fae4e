//! Fair turns at the compilers: a few compiles run at once, a bounded number
//! wait, each caller (an account, or a client address for anonymous callers)
//! has at most one compile running or waiting, and the holder of a session
//! in progress goes ahead of everyone else waiting.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a compile could not take its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The caller already has a compile running or waiting.
    AlreadyQueued,
    /// Every waiting place is taken.
    Full,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    urgent: bool,
    grant: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    waiting: VecDeque<Waiter>,
    /// Callers with a compile running or waiting.
    callers: HashSet<String>,
    next_id: u64,
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
    caller: String,
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

    /// Waits for a turn for `caller`; `urgent` (the holder of a session in
    /// progress) goes ahead of the waiting non-urgent callers, and is never
    /// refused for a full line: at most `max_waiting` others wait at once.
    pub async fn turn(&self, caller: &str, urgent: bool, max_waiting: usize) -> Result<Turn, Refused> {
        let (id, granted) = {
            let mut state = lock(&self.state);
            if state.callers.contains(caller) {
                return Err(Refused::AlreadyQueued);
            }
            if state.running < self.max_running {
                state.running += 1;
                state.callers.insert(caller.to_owned());
                return Ok(Turn { state: Arc::clone(&self.state), caller: caller.to_owned() });
            }
            if !urgent && state.waiting.len() >= max_waiting {
                return Err(Refused::Full);
            }
            let (grant, granted) = oneshot::channel();
            state.next_id += 1;
            let id = state.next_id;
            let at = if urgent { state.waiting.iter().take_while(|w| w.urgent).count() } else { state.waiting.len() };
            state.waiting.insert(at, Waiter { id, urgent, grant });
            state.callers.insert(caller.to_owned());
            (id, granted)
        };
        // If this future is dropped while waiting, the guard takes it out of
        // the line (or, if the turn was granted meanwhile, passes it on).
        let mut leaving = Leaving { state: &self.state, id, caller, done: false };
        let turn = granted.await;
        leaving.done = true;
        match turn {
            Ok(()) => Ok(Turn { state: Arc::clone(&self.state), caller: caller.to_owned() }),
            // The queue itself is gone: nothing runs any more.
            Err(_) => Err(Refused::Full),
        }
    }
}

/// Takes a waiter that gave up out of the line.
struct Leaving<'q> {
    state: &'q Mutex<State>,
    id: u64,
    caller: &'q str,
    done: bool,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = lock(self.state);
        state.callers.remove(self.caller);
        match state.waiting.iter().position(|w| w.id == self.id) {
            Some(at) => drop(state.waiting.remove(at)),
            // Granted just before it gave up: the turn it was handed goes on.
            None => pass_on(&mut state),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.callers.remove(&self.caller);
        pass_on(&mut state);
    }
}

/// Hands a finished turn to the first waiter still waiting, or frees it.
fn pass_on(state: &mut State) {
    while let Some(waiter) = state.waiting.pop_front() {
        if waiter.grant.send(()).is_ok() {
            return;
        }
    }
    state.running = state.running.saturating_sub(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_turn_per_caller_a_bounded_line_and_urgent_callers_first() {
        let queue = Arc::new(CompileQueue::new(1));
        let first = queue.turn("ada", false, 2).await.unwrap();
        // Ada may not queue a second compile while her first runs.
        assert_eq!(queue.turn("ada", false, 2).await.unwrap_err(), Refused::AlreadyQueued);
        let order = Arc::new(Mutex::new(Vec::new()));
        let wait = |who: &'static str, urgent: bool| {
            let (queue, order) = (Arc::clone(&queue), Arc::clone(&order));
            tokio::spawn(async move {
                let turn = queue.turn(who, urgent, 2).await.unwrap();
                order.lock().unwrap().push(who);
                drop(turn);
            })
        };
        let bob = wait("bob", false);
        tokio::task::yield_now().await;
        let holder = wait("holder", true);
        tokio::task::yield_now().await;
        // Two wait already: a third is refused at once.
        assert_eq!(queue.turn("carol", false, 2).await.unwrap_err(), Refused::Full);
        drop(first);
        holder.await.unwrap();
        bob.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["holder", "bob"]);
        // Everyone is done: turns are free again.
        drop(queue.turn("ada", false, 2).await.unwrap());
    }

    #[tokio::test]
    async fn a_caller_who_gives_up_leaves_the_line() {
        let queue = CompileQueue::new(1);
        let running = queue.turn("ada", false, 1).await.unwrap();
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(10), queue.turn("bob", false, 1)).await;
        assert!(gave_up.is_err());
        // Bob's place is free and he may queue again.
        let bob = queue.turn("bob", false, 1);
        drop(running);
        drop(bob.await.unwrap());
    }
}
