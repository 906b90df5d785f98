//! `gomlx chat`: an interactive conversation. The engine keeps the KV cache of
//! the conversation in a session, so each turn evaluates only its new tokens.
//! `/reset` starts over, `/exit` (or end of input) leaves.

use super::generate::{print_metrics, stream};
use super::{load_engine, out, usage, CliResult, ModelArgs, SamplingArgs};
use gomlx::engine::{Engine, GenerateOptions, Generation};
use gomlx::text::{ChatFormat, ChatMessage, ChatOptions};
use std::io::{BufRead, IsTerminal, Write};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message that opens the conversation.
    #[arg(long, alias = "system-prompt")]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, short = 'm', default_value_t = 512)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print speed, cache reuse and memory after each reply (stderr).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn turn(engine: &Engine, messages: &[ChatMessage], opts: &GenerateOptions, session: &gomlx::engine::ChatSession) -> CliResult<Generation> {
    let tok = engine.tokenizer().ok_or_else(|| super::runtime("the model has no tokenizer"))?;
    if tok.chat_template().is_some() {
        return Ok(engine.chat(messages, opts, &ChatOptions { add_generation_prompt: true, ..Default::default() }, Some(session))?);
    }
    // A base model without a template: "role: content" lines.
    let ids = tok.encode_chat(messages, &ChatOptions { add_generation_prompt: true, ..Default::default() }, &ChatFormat::Plain)?;
    Ok(engine.generate_in_session(ids, opts, session)?)
}

pub fn run(a: Args) -> CliResult {
    let sampler = a.sampling.config()?;
    if a.max_tokens == 0 {
        return Err(usage("--max-tokens must be at least 1"));
    }
    let (engine, _) = load_engine(&a.model)?;
    let opts = GenerateOptions { max_tokens: a.max_tokens, sampler, ..Default::default() };
    let interactive = std::io::stdin().is_terminal();
    let base: Vec<ChatMessage> = a.system.as_deref().map(ChatMessage::system).into_iter().collect();
    let mut messages = base.clone();
    let mut session = engine.new_session()?;
    if interactive {
        if engine.tokenizer().is_some_and(|t| t.chat_template().is_none()) {
            eprintln!("[the model has no chat template: turns are written as 'role: content' lines]");
        }
        eprintln!("[chat with {} — /reset starts over, /exit leaves]", engine.path().display());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!(">> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = base.clone();
                session = engine.new_session()?;
                if interactive {
                    eprintln!("[conversation reset]");
                }
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::user(text));
        let mut g = turn(&engine, &messages, &opts, &session)?;
        let (reply, m) = stream(&mut g)?;
        out("\n")?;
        if a.verbose {
            print_metrics(&m, g.finish_reason().map(|r| r.as_str()));
        }
        messages.push(ChatMessage::assistant(reply.trim_end()));
    }
    Ok(())
}
