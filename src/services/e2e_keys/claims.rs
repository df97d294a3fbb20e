//! One-time key claims, combined: every `/keys/claim` hands its wanted
//! `(user, device, algorithm)`s to one task, which takes the keys of all
//! the claims that queued up meanwhile in one transaction.
//!
//! Claiming deletes one key of each named device; the keys of a device sit
//! together, so each device costs a page written (and, on SQLite, copied
//! into the log) at every commit. Claims that arrive together for the same
//! devices (a client sharing a room key with the same members from several
//! devices, a busy bot) then write each page once instead of once a claim.
//! Claims that name a device twice in one batch get its lowest keys in the
//! order they arrived.
//!
//! The task, not the request, runs the transaction: a client that goes away
//! cannot cancel it half-way and leave the claims queued with it unanswered.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::error::{MatrixError, Result};
use crate::storage::Storage;
use crate::storage::e2e_keys::ClaimedKey;

/// A wanted key: (user, device, algorithm).
pub(super) type Wanted = (String, String, String);

/// A key taken: the wanted key it answers, and the key.
pub(super) type Taken = (String, String, String, ClaimedKey);

/// The wanted keys of one round of a batch, borrowed from its claims.
type Round<'a> = Vec<(&'a str, &'a str, &'a str)>;

/// At most this many claims share one transaction.
const MAX_BATCH: usize = 64;

struct Pending {
    wanted: Vec<Wanted>,
    done: oneshot::Sender<sqlx::Result<Vec<Taken>>>,
}

/// The queue of claims; its task ends when the queue is dropped.
pub(super) struct ClaimQueue {
    tx: mpsc::UnboundedSender<Pending>,
}

impl ClaimQueue {
    /// Starts the task (needs a tokio runtime).
    pub fn new(storage: Storage) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(storage, rx));
        Self { tx }
    }

    /// Takes the lowest one-time key of each wanted device that has one
    /// (a device with none left is missing from the answer).
    pub async fn take(&self, wanted: Vec<Wanted>) -> Result<Vec<Taken>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Pending { wanted, done })
            .map_err(|_| MatrixError::internal("the key claim task has stopped"))?;
        answer
            .await
            .map_err(|_| MatrixError::internal("the key claim task has stopped"))?
            .map_err(MatrixError::internal)
    }
}

async fn run(storage: Storage, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            take_alone(&storage, batch.pop().expect("one claim")).await;
            continue;
        }
        let result = {
            let (rounds, placed) = plan(&batch);
            storage
                .take_one_time_keys_rounds(&rounds)
                .await
                .map(|taken| hand_out(&batch, &placed, taken))
        };
        match result {
            Ok(answers) => {
                for (p, keys) in batch.into_iter().zip(answers) {
                    let _ = p.done.send(Ok(keys));
                }
            }
            // One claim's failure must not fail the others: each again alone.
            Err(_) => {
                for p in batch {
                    take_alone(&storage, p).await;
                }
            }
        }
    }
}

/// One claim in a transaction of its own.
async fn take_alone(storage: &Storage, p: Pending) {
    let wanted: Vec<(&str, &str, &str)> = p.wanted.iter().map(as_strs).collect();
    let _ = p.done.send(storage.take_one_time_keys(&wanted).await);
}

fn as_strs((u, d, a): &Wanted) -> (&str, &str, &str) {
    (u, d, a)
}

/// The rounds of a batch: round k holds each wanted key that k earlier
/// claims of the batch also want. `placed[i]` lists, for claim i, the round
/// of each of its wanted keys.
fn plan(batch: &[Pending]) -> (Vec<Round<'_>>, Vec<Vec<usize>>) {
    let mut seen: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut rounds: Vec<Round<'_>> = Vec::new();
    let mut placed = Vec::with_capacity(batch.len());
    for p in batch {
        let mut mine = Vec::with_capacity(p.wanted.len());
        for w in &p.wanted {
            let key = as_strs(w);
            let round = seen.entry(key).or_insert(0);
            if *round == rounds.len() {
                rounds.push(Vec::new());
            }
            rounds[*round].push(key);
            mine.push(*round);
            *round += 1;
        }
        placed.push(mine);
    }
    (rounds, placed)
}

/// Each claim's keys from the rounds' results (a wanted key is in a
/// round once, so each key goes to the one claim that round served).
fn hand_out(batch: &[Pending], placed: &[Vec<usize>], taken: Vec<Vec<Taken>>) -> Vec<Vec<Taken>> {
    let mut by_round: Vec<HashMap<Wanted, Taken>> = taken
        .into_iter()
        .map(|round| {
            round
                .into_iter()
                .map(|t| ((t.0.clone(), t.1.clone(), t.2.clone()), t))
                .collect()
        })
        .collect();
    batch
        .iter()
        .zip(placed)
        .map(|(p, rounds)| {
            p.wanted
                .iter()
                .zip(rounds)
                .filter_map(|(w, &round)| by_round[round].remove(w))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(wanted: &[&str]) -> Pending {
        let (done, _answer) = oneshot::channel();
        Pending {
            wanted: wanted
                .iter()
                .map(|d| ("@u:x".to_owned(), (*d).to_owned(), "alg".to_owned()))
                .collect(),
            done,
        }
    }

    fn key(device: &str, id: &str) -> Taken {
        let key = ClaimedKey {
            key_id: id.to_owned(),
            key_json: "{}".to_owned(),
        };
        ("@u:x".to_owned(), device.to_owned(), "alg".to_owned(), key)
    }

    /// A device two claims of a batch want is in two rounds; each claim
    /// gets the key of its own round, and a round that found no key left
    /// leaves that claim without one.
    #[test]
    fn claims_of_one_batch_share_out_the_rounds() {
        let batch = vec![pending(&["X", "Y"]), pending(&["X"]), pending(&["Y", "Z"])];
        let (rounds, placed) = plan(&batch);
        let names =
            |r: &Vec<(&str, &str, &str)>| r.iter().map(|w| w.1.to_owned()).collect::<Vec<_>>();
        assert_eq!(
            rounds.iter().map(names).collect::<Vec<_>>(),
            [vec!["X", "Y", "Z"], vec!["X", "Y"]]
        );
        assert_eq!(placed, [vec![0, 0], vec![1], vec![1, 0]]);
        let taken = vec![
            vec![key("X", "x0"), key("Y", "y0"), key("Z", "z0")],
            vec![key("X", "x1")],
        ];
        let ids = hand_out(&batch, &placed, taken)
            .into_iter()
            .map(|keys| keys.into_iter().map(|k| k.3.key_id).collect::<Vec<_>>())
            .collect::<Vec<_>>();
        assert_eq!(ids, [vec!["x0", "y0"], vec!["x1"], vec!["z0"]]);
    }
}
