//! A demo function endpoint: `cargo run --example demo_function [ADDR]` (default 127.0.0.1:8081).
//! Routes: `POST /echo` (answers the input), `/flaky` (fails every other call for the same
//! input), `/slow?ms=N`, `/long` (202 + `Jetask-Async: true`), `/noop` (204), `/sleep?ms=N`,
//! `/fail?status=S`. `jetask dev` serves the same on 127.0.0.1:9100 with functions registered.
//! Register it with: `jetask fn put echo --endpoint http://127.0.0.1:8081/echo`.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".into());
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let (bound, task) = jetask::cli::demo::serve(addr).await?;
    println!(
        "demo function listening on http://{bound} (POST /echo, /flaky, /slow?ms=N, /long, /noop, /sleep?ms=N, /fail?status=S)"
    );
    let _ = task.await;
    Ok(())
}
