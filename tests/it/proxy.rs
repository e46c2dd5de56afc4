//! A TCP forwarder on loopback that a test opens and closes, to take a real
//! PostgreSQL or broker away from one hxjobs process (and give it back)
//! without touching the services other tests share.

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct Proxy {
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Forwards `127.0.0.1:port` to `target` (host:port) until closed.
    pub async fn open(port: u16, target: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy port");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { tasks }
    }

    /// Stops listening and cuts every forwarded connection.
    pub async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}
