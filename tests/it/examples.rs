//! The examples in `examples/` run against the real service and print what their
//! comments and README.md promise: the Python client (requests) and the curl
//! walk-through.

use std::process::{Command, Output};

use support::started::app_with_workers;

/// Runs an example to its end, off the runtime's threads, and returns what it printed;
/// fails with its output unless it succeeded.
async fn run(program: &str, args: Vec<String>) -> String {
    let (program, shown) = (program.to_owned(), format!("{program} {}", args.join(" ")));
    let output: Output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{shown}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// Fails, naming what to install, when Python or its requests package is missing.
fn require_python_requests() {
    let found = Command::new("python3")
        .args(["-c", "import requests"])
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "examples/client.py needs python3 with the requests package: \
         apt-get install python3-requests, or pip install requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_sums_polls_and_shows_the_detail_of_an_error() {
    require_python_requests();
    let (app, _workers) = app_with_workers().await;
    let out = run(
        "python3",
        vec!["examples/client.py".into(), app.base.clone()],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 11, "{out}");
    assert_eq!(lines[0], "sync/sum [0.1, 0.2] = 0.3");
    assert_eq!(
        lines[1],
        "sync/sum [9007199254740993, 1] = 9007199254740994"
    );
    let session_id = lines[2]
        .strip_prefix("post_task [1, 2.5] -> session ")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(session_id.parse::<i64>().is_ok_and(|id| id > 0), "{out}");
    assert_eq!(lines[3], format!("get_task_result {session_id} = 3.5"));
    assert_eq!(
        lines[4],
        "events [n, 0.5] for n in 1, 2, 3 = [Decimal('1.5'), Decimal('2.5'), Decimal('3.5')]"
    );
    let bulk = "[[1, 2], [0.1, 0.2], [9007199254740993, 1]]";
    let sums = "[3, Decimal('0.3'), 9007199254740994]";
    assert_eq!(lines[5], format!("sync/sums {bulk} = {sums}"));
    assert_eq!(lines[6], format!("post_tasks {bulk} -> 3 sessions"));
    assert_eq!(lines[7], format!("get_task_results = {sums}"));
    // The workers may compute the sum before the cancel comes: both are right answers.
    let cancelled = lines[8].ends_with(" -> cancelled");
    assert!(
        cancelled || lines[8].ends_with(" -> too late: done, 4"),
        "{out}"
    );
    assert_eq!(
        lines[9],
        "sync/sum [1, 'two'] -> 400 Bad Request: `args[1]` is not a JSON number \
         (elements count from 0): `args` must be an array of numbers only"
    );
    assert_eq!(
        lines[10],
        "get_task_result 1 -> 404 Not Found: no session has id 1: use the id that \
         post_task returned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_curl_walk_through_runs_and_answers_as_its_comments_say() {
    let (app, _workers) = app_with_workers().await;
    let out = run("bash", vec!["examples/curl.sh".into(), app.base.clone()]).await;
    let base = &app.base;
    // Each command is shown as typed, followed by its answer.
    for expected in [
        format!(
            "$ curl -sS {base}/sync/sum -H 'content-type: application/json' \
             -d '{{\"args\": [0.1, 0.2]}}'\n{{\"result\":0.3}}\n"
        ),
        "preference-applied: wait=2\r\n".to_owned(),
        "\"result\":3.5,\"status\":\"done\"}\n".to_owned(),
        "preference-applied: wait=5\r\n".to_owned(),
        "\nevent: result\n".to_owned(),
        "\nid: end\nevent: end\ndata: {\"sessions\":1}\n".to_owned(),
        "$ curl -sS -X DELETE ".to_owned(),
        "\"status\":400,\"detail\":\"`args[1]` is not a JSON number".to_owned(),
        "\"status\":400,\"detail\":\"`session_id` must be positive, not 0".to_owned(),
        format!("$ curl -sS {base}/healthz\n{{\"status\":\"ok\"}}\n"),
        "{\"status\":\"ready\",".to_owned(),
        "\n200 application/json\n".to_owned(),
    ] {
        assert!(out.contains(&expected), "no {expected:?} in:\n{out}");
    }
    // `Prefer: wait=2`: the sum, or past 2 s (a loaded machine) a session to poll.
    assert!(
        out.contains("{\"result\":3}\n") || out.contains("HTTP/1.1 202 Accepted\r\n"),
        "{out}"
    );
    // The session polled is the one post_task answered.
    let submitted = out
        .split("{\"session_id\":")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("no session id in:\n{out}"));
    assert!(
        out.contains(&format!("get_task_result?session_id={submitted}'\n")),
        "{out}"
    );
}
