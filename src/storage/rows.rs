//! How rows are read. Every query's row decodes into a named struct with
//! `#[derive(sqlx::FromRow)]` (columns by name, so the `SELECT` list and the
//! struct must agree on names: alias computed columns with `AS`), or, for a
//! single column, with `sqlx::query_scalar`. A column that does not decode
//! into its field's type (a type drift, a bad id stored) is a
//! `sqlx::Error::ColumnDecode`, which a request answers with a 500 and a
//! log line: never a panic. `Row::get` is not used outside tests.
//!
//! Both databases store flags as integers (`BIGINT`, 0 or 1): a flag field
//! is `#[sqlx(try_from = "IntFlag")] field: bool`. Ids that callers want as
//! ruma types decode with `#[sqlx(try_from = "String")]`, nullable ones
//! with `#[sqlx(try_from = "OptionalId<OwnedEventId>")]` (the field's type).

use sqlx::any::{Any, AnyTypeInfo, AnyValueRef};
use sqlx::error::BoxDynError;
use sqlx::{Decode, Type};

/// An integer column read as a flag: 0 is false, anything else true.
pub(crate) struct IntFlag(i64);

impl Type<Any> for IntFlag {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <i64 as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for IntFlag {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        <i64 as Decode<'r, Any>>::decode(value).map(Self)
    }
}

impl From<IntFlag> for bool {
    fn from(flag: IntFlag) -> bool {
        flag.0 != 0
    }
}

/// A nullable id column: NULL is `None`, text parses into `T` (an id that
/// does not parse is a `ColumnDecode` error).
pub(crate) struct OptionalId<T>(Option<T>);

impl<T> Type<Any> for OptionalId<T> {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r, T> Decode<'r, Any> for OptionalId<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        if sqlx::ValueRef::is_null(&value) {
            return Ok(Self(None));
        }
        let text = <String as Decode<'r, Any>>::decode(value)?;
        Ok(Self(Some(T::try_from(text)?)))
    }
}

impl<T> From<OptionalId<T>> for Option<T> {
    fn from(id: OptionalId<T>) -> Option<T> {
        id.0
    }
}

/// A packed read (see [`super::packed_column`]): the number of rows and
/// their fields as one text, `None` when there are none.
#[derive(sqlx::FromRow)]
pub(crate) struct PackedRows {
    pub n: i64,
    pub packed: Option<String>,
}

/// A column that decoded but does not hold what its field wants (a
/// malformed id in a packed read): the error a derived row gives.
pub(crate) fn decode_error(
    column: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    }
}

/// A single id column (read with `query_scalar`) parsed into its ruma
/// type: a bad stored id is the error a derived row gives.
pub(crate) fn parse_id<T>(column: &str, raw: String) -> sqlx::Result<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    T::try_from(raw).map_err(|e| decode_error(column, e))
}

impl super::Storage {
    /// The id in `column` of the row `sql` finds with `key` bound to `$1`,
    /// if there is one, parsed like [`parse_id`].
    pub(crate) async fn optional_id<T>(
        &self,
        sql: &'static str,
        key: &str,
        column: &str,
    ) -> sqlx::Result<Option<T>>
    where
        T: TryFrom<String>,
        T::Error: std::error::Error + Send + Sync + 'static,
    {
        let raw: Option<String> = sqlx::query_scalar(sql)
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        raw.map(|r| parse_id(column, r)).transpose()
    }

    /// The ids in `column` of every row `sql` finds with `key` bound to
    /// `$1`, parsed like [`parse_id`] (one bad id fails the read).
    pub(crate) async fn id_list<T>(
        &self,
        sql: &'static str,
        key: &str,
        column: &str,
    ) -> sqlx::Result<Vec<T>>
    where
        T: TryFrom<String>,
        T::Error: std::error::Error + Send + Sync + 'static,
    {
        let raw: Vec<String> = sqlx::query_scalar(sql)
            .bind(key)
            .fetch_all(self.pool())
            .await?;
        raw.into_iter().map(|r| parse_id(column, r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::IntFlag;
    use crate::storage::Storage;

    #[derive(Debug, sqlx::FromRow)]
    struct Counted {
        #[allow(dead_code)]
        n: i64,
    }

    #[derive(Debug, sqlx::FromRow)]
    struct Flagged {
        #[sqlx(try_from = "IntFlag")]
        flag: bool,
    }

    #[derive(Debug, sqlx::FromRow)]
    struct WithRoom {
        #[sqlx(try_from = "String")]
        #[allow(dead_code)]
        room_id: ruma::OwnedRoomId,
    }

    #[derive(Debug, sqlx::FromRow)]
    struct MaybeRedacted {
        #[sqlx(try_from = "super::OptionalId<ruma::OwnedEventId>")]
        redacted_by: Option<ruma::OwnedEventId>,
    }

    async fn decode<T>(storage: &Storage, sql: &'static str) -> sqlx::Result<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        sqlx::query_as::<_, T>(sql).fetch_one(storage.pool()).await
    }

    /// A nullable id column as read (as text).
    async fn redacted_by(storage: &Storage, sql: &'static str) -> Option<String> {
        let row = decode::<MaybeRedacted>(storage, sql).await.unwrap();
        row.redacted_by.map(|e| e.to_string())
    }

    /// A column of the wrong type, or an id that does not parse, is an
    /// error the request turns into a 500, not a panic.
    #[tokio::test]
    async fn a_type_drift_is_an_error_not_a_panic() {
        let (_dir, storage) = Storage::scratch_with_table_t().await;
        let drifts = [
            decode::<Counted>(&storage, "SELECT 'seven' AS n")
                .await
                .map(drop),
            decode::<WithRoom>(&storage, "SELECT 'no-room' AS room_id")
                .await
                .map(drop),
            decode::<Flagged>(&storage, "SELECT 'yes' AS flag")
                .await
                .map(drop),
            decode::<MaybeRedacted>(&storage, "SELECT 'e' AS redacted_by")
                .await
                .map(drop),
        ];
        for drift in &drifts {
            assert!(
                matches!(drift, Err(sqlx::Error::ColumnDecode { .. })),
                "{drift:?}"
            );
        }
        let missing = decode::<Counted>(&storage, "SELECT 7 AS m").await;
        assert!(
            matches!(missing, Err(sqlx::Error::ColumnNotFound(_))),
            "{missing:?}"
        );
        let off = decode::<Flagged>(&storage, "SELECT 0 AS flag")
            .await
            .unwrap();
        let on = decode::<Flagged>(&storage, "SELECT 1 AS flag")
            .await
            .unwrap();
        assert_eq!((off.flag, on.flag), (false, true));
        assert_eq!(
            (
                redacted_by(&storage, "SELECT NULL AS redacted_by").await,
                redacted_by(&storage, "SELECT '$e' AS redacted_by").await
            ),
            (None, Some("$e".to_owned()))
        );
        // What a request answers with (and logs).
        let [Err(drifted), ..] = drifts else {
            unreachable!()
        };
        let answer = crate::error::MatrixError::from(drifted);
        assert_eq!(
            axum::response::IntoResponse::into_response(answer).status(),
            http::StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    /// Single-column id reads parse every id; one that does not parse fails
    /// the whole read (never skipped, never a panic).
    #[tokio::test]
    async fn a_bad_id_in_a_column_read_is_a_decode_error() {
        let (_dir, storage) = Storage::scratch_with_table_t().await;
        let rooms: Vec<ruma::OwnedRoomId> = storage
            .id_list("SELECT $1 AS room_id", "!r:x", "room_id")
            .await
            .unwrap();
        assert_eq!(rooms, ["!r:x"]);
        let bad = storage
            .id_list::<ruma::OwnedRoomId>("SELECT $1 AS room_id", "no-room", "room_id")
            .await;
        assert!(
            matches!(bad, Err(sqlx::Error::ColumnDecode { .. })),
            "{bad:?}"
        );
        let bad = storage
            .optional_id::<ruma::OwnedUserId>("SELECT $1 AS user_id", "nobody", "user_id")
            .await;
        assert!(
            matches!(bad, Err(sqlx::Error::ColumnDecode { .. })),
            "{bad:?}"
        );
    }
}
