//! The service as most tests want it: `serve` and a worker pool in this process, with
//! names of their own, both workers consuming before the test begins.

use crate::{unique_config, App, Workers};

/// `serve` with two workers consuming its task queue.
pub async fn app_with_workers() -> (App, Workers) {
    let config = unique_config();
    let app = App::start(config.clone()).await;
    let workers = Workers::start(&config);
    app.wait_for_workers(2).await;
    (app, workers)
}
