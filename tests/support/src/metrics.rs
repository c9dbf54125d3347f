//! Reading a `/metrics` page as Prometheus would: one scrape, and the value of a series
//! in it.

use std::time::{Duration, Instant};

/// One scrape of a `/metrics` page.
#[derive(Debug)]
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    /// GETs `url`, which must answer 200 in the Prometheus text format.
    pub async fn of(url: &str) -> Scrape {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        Scrape {
            text: resp.text().await.unwrap(),
        }
    }

    /// The value of a series written exactly as the page writes it,
    /// `name{label="value",...}`; None when the page has no such line.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.text.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            Some(value.parse().unwrap())
        })
    }

    /// A counter's value; one that was never counted has no line yet and counts 0.
    /// The metric itself must be on the page, so a misspelt name fails.
    pub fn count(&self, series: &str) -> f64 {
        let name = series.split('{').next().unwrap();
        let declared = self.text.lines().any(|line| {
            let Some(metric) = line.strip_prefix("# TYPE ") else {
                return false;
            };
            let metric = metric.split(' ').next().unwrap();
            match name.strip_prefix(metric) {
                Some(rest) => ["", "_count", "_sum", "_bucket"].contains(&rest),
                None => false,
            }
        });
        assert!(declared, "no metric {name} on the page:\n{}", self.text);
        self.get(series).unwrap_or(0.0)
    }
}

/// Scrapes `url` until `check` holds, for at most 20 s; returns that scrape.
pub async fn scrape_until(url: &str, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = Scrape::of(url).await;
        if check(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback address for a listener the test does not bind itself.
pub fn free_address() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}
