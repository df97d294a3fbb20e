//! Table `appservice_state`: per application service, the stream position
//! its events were decided up to (sent, or of no interest to it), its next
//! transaction id, its positions in the to-device and device-list streams,
//! and the transaction in flight (kept until the service acknowledges it,
//! so a retry sends the same id and body).

use sqlx::Row;

use super::Storage;

/// A service's delivery state.
#[derive(Debug, Clone)]
pub struct AppServiceState {
    pub stream_pos: i64,
    /// The to-device messages for its users up to here were sent to it.
    pub to_device_pos: i64,
    /// The device-list changes up to here were sent to it (or were of no
    /// interest to it).
    pub device_list_pos: i64,
    pub next_txn_id: i64,
    pub in_flight: Option<InFlightTxn>,
}

/// A transaction sent (or about to be) and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct InFlightTxn {
    pub txn_id: i64,
    pub body: String,
    /// The stream position the service is at once it is acknowledged.
    pub upto: i64,
    /// Its to-device and device-list positions once it is acknowledged.
    pub to_device_upto: i64,
    pub device_list_upto: i64,
}

impl Storage {
    /// The service's state, created at `start_pos` (nothing before it is
    /// sent: a new service starts from now, as Synapse) if it has none.
    pub async fn appservice_state(
        &self,
        as_id: &str,
        start_pos: i64,
    ) -> sqlx::Result<AppServiceState> {
        sqlx::query(
            "INSERT INTO appservice_state (as_id, stream_pos, to_device_pos, device_list_pos,
                 next_txn_id) VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (as_id) DO NOTHING",
        )
        .bind(as_id)
        .bind(start_pos)
        .bind(start_pos)
        .bind(start_pos)
        .execute(self.pool())
        .await?;
        let row = sqlx::query(
            "SELECT stream_pos, COALESCE(to_device_pos, stream_pos) AS to_device_pos,
                 COALESCE(device_list_pos, stream_pos) AS device_list_pos, next_txn_id,
                 txn_id, txn_body, txn_upto, txn_to_device_upto, txn_device_list_upto
             FROM appservice_state WHERE as_id = $1",
        )
        .bind(as_id)
        .fetch_one(self.pool())
        .await?;
        let txn_id: Option<i64> = row.try_get("txn_id")?;
        let body: Option<String> = row.try_get("txn_body")?;
        let upto: Option<i64> = row.try_get("txn_upto")?;
        let to_device_pos: i64 = row.try_get("to_device_pos")?;
        let device_list_pos: i64 = row.try_get("device_list_pos")?;
        let to_device_upto: Option<i64> = row.try_get("txn_to_device_upto")?;
        let device_list_upto: Option<i64> = row.try_get("txn_device_list_upto")?;
        Ok(AppServiceState {
            stream_pos: row.try_get("stream_pos")?,
            to_device_pos,
            device_list_pos,
            next_txn_id: row.try_get("next_txn_id")?,
            in_flight: match (txn_id, body, upto) {
                (Some(txn_id), Some(body), Some(upto)) => Some(InFlightTxn {
                    txn_id,
                    body,
                    upto,
                    to_device_upto: to_device_upto.unwrap_or(to_device_pos),
                    device_list_upto: device_list_upto.unwrap_or(device_list_pos),
                }),
                _ => None,
            },
        })
    }

    /// Records a transaction as in flight (before it is sent).
    pub async fn appservice_begin_txn(&self, as_id: &str, txn: &InFlightTxn) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE appservice_state SET txn_id = $2, txn_body = $3, txn_upto = $4,
                 txn_to_device_upto = $5, txn_device_list_upto = $6, next_txn_id = $2 + 1
             WHERE as_id = $1",
        )
        .bind(as_id)
        .bind(txn.txn_id)
        .bind(&txn.body)
        .bind(txn.upto)
        .bind(txn.to_device_upto)
        .bind(txn.device_list_upto)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The service acknowledged its transaction in flight: it is at the
    /// positions the transaction covered.
    pub async fn appservice_end_txn(&self, as_id: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE appservice_state
             SET stream_pos = COALESCE(txn_upto, stream_pos),
                 to_device_pos = COALESCE(txn_to_device_upto, to_device_pos, stream_pos),
                 device_list_pos = COALESCE(txn_device_list_upto, device_list_pos, stream_pos),
                 txn_id = NULL, txn_body = NULL, txn_upto = NULL,
                 txn_to_device_upto = NULL, txn_device_list_upto = NULL
             WHERE as_id = $1",
        )
        .bind(as_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Moves the service's positions on (events, to-device messages and
    /// device-list changes up to them were of no interest to it); never
    /// back, never past a transaction in flight.
    pub async fn appservice_advance(
        &self,
        as_id: &str,
        pos: i64,
        to_device_pos: i64,
        device_list_pos: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE appservice_state
             SET stream_pos = CASE WHEN stream_pos < $2 THEN $2 ELSE stream_pos END,
                 to_device_pos = CASE WHEN COALESCE(to_device_pos, stream_pos) < $3 THEN $3
                     ELSE to_device_pos END,
                 device_list_pos = CASE WHEN COALESCE(device_list_pos, stream_pos) < $4 THEN $4
                     ELSE device_list_pos END
             WHERE as_id = $1 AND txn_id IS NULL",
        )
        .bind(as_id)
        .bind(pos)
        .bind(to_device_pos)
        .bind(device_list_pos)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
