//! The delegator shards a fetcher rotates over, following discovery. Shards are not replicas
//! (each leases only its own chunks), so they are rotated over, not balanced: every shard gets
//! asked before the fetcher idles.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use facesweep_common::grpc::channel_to;
use facesweep_common::tls::Tls;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Largest lease message accepted: 4× what a delegator ever sends (its `MAX_LEASE_BYTES`).
const MAX_LEASE_MESSAGE: usize = 16 << 20;

pub struct Delegators {
    members: watch::Receiver<BTreeSet<String>>,
    /// One client per address, kept while the address is a member so connections are reused.
    clients: Mutex<HashMap<String, DelegatorServiceClient<Channel>>>,
    tls: Option<Tls>,
}

impl Delegators {
    pub fn new(members: watch::Receiver<BTreeSet<String>>, tls: Option<Tls>) -> Self {
        Delegators { members, clients: Mutex::default(), tls }
    }

    /// The current delegators, in a stable (address) order.
    pub fn snapshot(&self) -> Vec<DelegatorServiceClient<Channel>> {
        let set = self.members.borrow().clone();
        let mut clients = self.clients.lock().unwrap();
        clients.retain(|addr, _| set.contains(addr));
        set.iter()
            .filter_map(|addr| {
                if let Some(c) = clients.get(addr) {
                    return Some(c.clone());
                }
                let client =
                    DelegatorServiceClient::new(channel_to(addr, self.tls.as_ref(), "delegator").ok()?)
                        .max_decoding_message_size(MAX_LEASE_MESSAGE);
                clients.insert(addr.clone(), client.clone());
                Some(client)
            })
            .collect()
    }
}
