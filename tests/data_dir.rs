//! One server per data dir: a second `serve` on a data dir in use is refused at start, names the
//! server that holds it, and leaves that one serving; a `kill -9` frees the dir for the next.

mod common;

use common::{Options, Server};

fn sent(message_id: u64) -> String {
    format!(
        r#"{{"event":"sent","time":1700000000,"MessageID":{message_id},"email":"a@gmail.com"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_data_dir_in_use_is_refused_and_the_first_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = Server::start_with(Options::default().data_dir(&data));
    let (status, text) = first.post("/webhooks/mailjet", sent(1)).await;
    assert_eq!(status, 200, "{text}");

    match Server::try_start(Options::default().data_dir(&data)) {
        Ok(second) => panic!(
            "a second server started on the same data dir (pid {} beside {})",
            second.pid(),
            first.pid()
        ),
        Err((exit, logs)) => {
            let text = logs.join("\n");
            assert!(
                exit.is_some_and(|s| !s.success()),
                "the second server should exit with an error, not wait: {exit:?}\n{text}"
            );
            assert!(
                text.contains("in use by another bouncewatch")
                    && text.contains(&format!("pid {}", first.pid())),
                "the refusal should say the dir is in use and by whom:\n{text}"
            );
        }
    }

    // The refused start changed nothing for the first server.
    let (status, text) = first.post("/webhooks/mailjet", sent(2)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""stored":1"#), "{text}");

    // The kernel drops the lock with the process: a crash leaves nothing stale behind, and the
    // next server on the dir has the journal of the first, retries included.
    first.kill9();
    let next = Server::start_with(Options::default().data_dir(&data));
    let (status, text) = next.post("/webhooks/mailjet", sent(1)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""duplicates":1"#), "{text}");
}
