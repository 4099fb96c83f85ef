//! diesel's connection traits for a [`Conn`] of diesel's r2d2 manager (feature `diesel`): such a
//! `Conn` is taken as it is, `&mut conn`, wherever diesel takes a connection, as diesel itself
//! does for r2d2's `PooledConnection`. Each method hands the call to the connection inside.
//!
//! diesel's `Connection` must be `Send`, so this `Conn` is: holding it across `io!` or an
//! `.await` compiles. It is caught at run time instead: the body's stretch that ends holding it
//! logs a `WARN` naming the function (once per function, counted in
//! [`Stats::connection_warnings`](crate::Stats::connection_warnings)).

use diesel::connection::{
    CacheSize, Connection, ConnectionSealed, Instrumentation, LoadConnection, SimpleConnection,
    TransactionManager, TransactionManagerStatus,
};
use diesel::expression::QueryMetadata;
use diesel::migration::MigrationConnection;
use diesel::query_builder::{Query, QueryFragment, QueryId};
use diesel::query_dsl::UpdateAndFetchResults;
use diesel::r2d2::{ConnectionManager, R2D2Connection};
use diesel::result::{ConnectionError, ConnectionResult, QueryResult};

use super::{Conn, Stays};

// SAFETY: `Stays` holds no data (two `PhantomData`s); it is not `Send` only so that rustc rejects
// a `Conn` held across an await. diesel needs its connections `Send`, so for diesel's manager the
// marker is; whether the whole `Conn` is `Send` is still decided by rustc from its other fields
// (r2d2's connection, the pool, the counters), which are `Send` when `C` is.
unsafe impl<C: Send> Send for Stays<ConnectionManager<C>> {}

impl<C> SimpleConnection for Conn<ConnectionManager<C>>
where
    C: R2D2Connection + Send + 'static,
{
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        (**self).batch_execute(query)
    }
}

impl<C> ConnectionSealed for Conn<ConnectionManager<C>> where
    C: ConnectionSealed + R2D2Connection + Send + 'static
{
}

impl<C> Connection for Conn<ConnectionManager<C>>
where
    C: Connection + R2D2Connection + Send + 'static,
{
    type Backend = C::Backend;
    type TransactionManager = ConnTransactionManager<C::TransactionManager>;

    fn establish(_: &str) -> ConnectionResult<Self> {
        Err(ConnectionError::BadConnection(
            "a blocking_first::pool::Conn comes from a Pool (`pool.get()`), it cannot be \
             established directly"
                .to_owned(),
        ))
    }

    fn begin_test_transaction(&mut self) -> QueryResult<()> {
        (**self).begin_test_transaction()
    }

    fn execute_returning_count<T>(&mut self, source: &T) -> QueryResult<usize>
    where
        T: QueryFragment<Self::Backend> + QueryId,
    {
        (**self).execute_returning_count(source)
    }

    fn transaction_state(
        &mut self,
    ) -> &mut <Self::TransactionManager as TransactionManager<Self>>::TransactionStateData {
        (**self).transaction_state()
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        (**self).instrumentation()
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        (**self).set_instrumentation(instrumentation);
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        (**self).set_prepared_statement_cache_size(size);
    }
}

impl<B, C> LoadConnection<B> for Conn<ConnectionManager<C>>
where
    C: Connection + LoadConnection<B> + R2D2Connection + Send + 'static,
{
    type Cursor<'conn, 'query> = <C as LoadConnection<B>>::Cursor<'conn, 'query>;
    type Row<'conn, 'query> = <C as LoadConnection<B>>::Row<'conn, 'query>;

    fn load<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> QueryResult<Self::Cursor<'conn, 'query>>
    where
        T: Query + QueryFragment<Self::Backend> + QueryId + 'query,
        Self::Backend: QueryMetadata<T::SqlType>,
    {
        (**self).load(source)
    }
}

impl<C> MigrationConnection for Conn<ConnectionManager<C>>
where
    C: Connection + MigrationConnection + R2D2Connection + Send + 'static,
{
    fn setup(&mut self) -> QueryResult<usize> {
        (**self).setup()
    }
}

impl<Changes, Output, C> UpdateAndFetchResults<Changes, Output> for Conn<ConnectionManager<C>>
where
    C: Connection + UpdateAndFetchResults<Changes, Output> + R2D2Connection + Send + 'static,
{
    fn update_and_fetch(&mut self, changeset: Changes) -> QueryResult<Output> {
        (**self).update_and_fetch(changeset)
    }
}

/// The transaction manager of a [`Conn`]: the connection's own, through the `Conn`.
#[doc(hidden)]
#[derive(Debug)]
pub struct ConnTransactionManager<T>(std::marker::PhantomData<T>);

impl<C, T> TransactionManager<Conn<ConnectionManager<C>>> for ConnTransactionManager<T>
where
    C: Connection<TransactionManager = T> + R2D2Connection + Send + 'static,
    T: TransactionManager<C>,
{
    type TransactionStateData = T::TransactionStateData;

    fn begin_transaction(conn: &mut Conn<ConnectionManager<C>>) -> QueryResult<()> {
        T::begin_transaction(&mut **conn)
    }

    fn rollback_transaction(conn: &mut Conn<ConnectionManager<C>>) -> QueryResult<()> {
        T::rollback_transaction(&mut **conn)
    }

    fn commit_transaction(conn: &mut Conn<ConnectionManager<C>>) -> QueryResult<()> {
        T::commit_transaction(&mut **conn)
    }

    fn transaction_manager_status_mut(
        conn: &mut Conn<ConnectionManager<C>>,
    ) -> &mut TransactionManagerStatus {
        T::transaction_manager_status_mut(&mut **conn)
    }
}
