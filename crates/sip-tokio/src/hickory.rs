//! The [`Resolver`] over hickory-resolver: the system's DNS servers.

use std::fmt;
use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::resolve::{BoxFuture, NaptrRecord, ResolveError, Resolver, SrvRecord};

/// Looks records up through hickory-resolver, by default with the system's
/// configuration (`/etc/resolv.conf`), with hickory's cache.
#[derive(Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// A resolver with the system's DNS configuration.
    pub fn from_system_conf() -> Result<Self, ResolveError> {
        let inner = TokioResolver::builder_tokio()
            .map_err(lookup_error)?
            .build()
            .map_err(lookup_error)?;
        Ok(HickoryResolver { inner })
    }

    /// Wraps a resolver configured by the application.
    pub fn from_resolver(inner: TokioResolver) -> Self {
        HickoryResolver { inner }
    }
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

impl Resolver for HickoryResolver {
    fn naptr<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<NaptrRecord>, ResolveError>> {
        Box::pin(async move {
            let lookup = match self.inner.lookup(fqdn(name), RecordType::NAPTR).await {
                Ok(lookup) => lookup,
                Err(e) if is_empty(&e) => return Ok(Vec::new()),
                Err(e) => return Err(lookup_error(e)),
            };
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::NAPTR(naptr) => Some(NaptrRecord {
                        order: naptr.order,
                        preference: naptr.preference,
                        flags: String::from_utf8_lossy(&naptr.flags).into_owned(),
                        services: String::from_utf8_lossy(&naptr.services).into_owned(),
                        replacement: naptr.replacement.to_ascii(),
                    }),
                    _ => None,
                })
                .collect())
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, ResolveError>> {
        Box::pin(async move {
            let lookup = match self.inner.lookup(fqdn(name), RecordType::SRV).await {
                Ok(lookup) => lookup,
                Err(e) if is_empty(&e) => return Ok(Vec::new()),
                Err(e) => return Err(lookup_error(e)),
            };
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(SrvRecord {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_ascii(),
                    }),
                    _ => None,
                })
                .collect())
        })
    }

    fn ip<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move {
            match self.inner.lookup_ip(fqdn(name)).await {
                Ok(lookup) => Ok(lookup.iter().collect()),
                Err(e) if is_empty(&e) => Ok(Vec::new()),
                Err(e) => Err(lookup_error(e)),
            }
        })
    }
}

/// Names from URIs and records are absolute: no search domains.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn is_empty(error: &NetError) -> bool {
    error.is_no_records_found() || error.is_nx_domain()
}

fn lookup_error(error: NetError) -> ResolveError {
    ResolveError::Lookup {
        reason: error.to_string(),
    }
}
