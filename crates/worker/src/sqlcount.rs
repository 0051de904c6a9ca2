//! Counting the rows of a MySQL/MariaDB SQL dump while it streams: the record a verification
//! compares the restore with, for an engine whose dump tool cannot share a snapshot with
//! another session. The rows are counted in the dump itself, so they are exactly what it holds.
//!
//! `mariadb-dump` writes a `CREATE TABLE `name`` statement for every table and its rows as
//! extended `INSERT INTO `name` VALUES (...),(...);` statements (a line break after `VALUES` and
//! between tuples in recent versions), each tuple in parentheses,
//! strings single-quoted with backslash escapes. A tuple is counted where a parenthesis opens at
//! depth zero outside a string; a statement ends at a `;` at depth zero outside a string.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use svalbard_core::verification::TableCounts;
use tokio::io::{AsyncRead, ReadBuf};

/// Longest start of a line looked at for a statement's beginning.
const HEAD: usize = 256;

#[derive(Default)]
enum State {
    /// At the start of a line, its first bytes kept.
    #[default]
    LineStart,
    Head(Vec<u8>),
    /// In a line that is neither a table's creation nor its rows.
    Skip,
    /// In the tuples of an `INSERT` into the table.
    Values {
        table: String,
        depth: u32,
        quote: Option<u8>,
        escaped: bool,
    },
}

/// Counts rows per table of a SQL dump fed to it in chunks of any size.
#[derive(Default)]
pub struct SqlRowCounter {
    state: State,
    counts: TableCounts,
}

/// The table named at the start of `rest` (`` `name` ``, backticks doubled inside), and the
/// bytes after it.
fn table_name(rest: &[u8]) -> Option<(String, &[u8])> {
    let rest = rest.strip_prefix(b"`")?;
    let mut name = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'`' {
            // A backtick at the end of what is known may be the first of a doubled one.
            let next = rest.get(i + 1)?;
            if *next == b'`' {
                name.push(b'`');
                i += 2;
                continue;
            }
            return Some((String::from_utf8_lossy(&name).into_owned(), &rest[i + 1..]));
        }
        name.push(rest[i]);
        i += 1;
    }
    None
}

impl SqlRowCounter {
    /// What was counted so far.
    #[must_use]
    pub fn counts(&self) -> &TableCounts {
        &self.counts
    }

    /// Looks at a line's first bytes once they are known (the line is longer, or ended).
    /// Returns the state to go on in, and how many of the kept bytes it consumed.
    fn classify(&mut self, head: &[u8], complete: bool) -> Option<(State, usize)> {
        if let Some(rest) = head.strip_prefix(b"CREATE TABLE ") {
            let (name, _) = table_name(rest)?;
            self.counts.entry(name).or_insert(0);
            return Some((State::Skip, head.len()));
        }
        if let Some(rest) = head.strip_prefix(b"INSERT INTO ") {
            let (name, after) = table_name(rest)?;
            // `mariadb-dump` 10.11 breaks the line after `VALUES`; older ones go on after a space.
            let values = after.strip_prefix(b" VALUES")?;
            self.counts.entry(name.clone()).or_insert(0);
            return Some((
                State::Values {
                    table: name,
                    depth: 0,
                    quote: None,
                    escaped: false,
                },
                head.len() - values.len(),
            ));
        }
        // Not (yet) recognisable: wait for more of the line unless it cannot become one.
        let prefixes: [&[u8]; 2] = [b"CREATE TABLE `", b"INSERT INTO `"];
        let may_be = prefixes.iter().any(|p| p.starts_with(&head[..head.len().min(p.len())]));
        (complete || !may_be || head.len() >= HEAD).then_some((State::Skip, head.len()))
    }

    /// Counts the tuples in `input`, in the `Values` state; returns how many bytes it took.
    fn values(&mut self, input: &[u8]) -> usize {
        let State::Values {
            table,
            depth,
            quote,
            escaped,
        } = &mut self.state
        else {
            return 0;
        };
        for (i, &b) in input.iter().enumerate() {
            if let Some(q) = *quote {
                if *escaped {
                    *escaped = false;
                } else if b == b'\\' {
                    *escaped = true;
                } else if b == q {
                    *quote = None;
                }
                continue;
            }
            match b {
                b'\'' | b'"' => *quote = Some(b),
                b'(' => {
                    if *depth == 0 {
                        *self.counts.entry(table.clone()).or_insert(0) += 1;
                    }
                    *depth += 1;
                }
                b')' => *depth = depth.saturating_sub(1),
                b';' if *depth == 0 => {
                    self.state = State::Skip;
                    return i + 1;
                }
                _ => {}
            }
        }
        input.len()
    }

    /// Feeds the next bytes of the dump.
    pub fn push(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match std::mem::take(&mut self.state) {
                State::LineStart => self.state = State::Head(Vec::new()),
                State::Head(mut head) => {
                    let end = input.iter().position(|&b| b == b'\n');
                    let take = end.unwrap_or(input.len()).min(HEAD - head.len());
                    head.extend_from_slice(&input[..take]);
                    let complete = end.is_some_and(|e| e == take);
                    let decided = match self.classify(&head, complete) {
                        // A line that is complete, or long enough, and still undecided is
                        // neither a table's creation nor its rows.
                        None if complete || head.len() >= HEAD => Some((State::Skip, head.len())),
                        other => other,
                    };
                    match decided {
                        None => {
                            self.state = State::Head(head);
                            input = &input[take..];
                        }
                        Some((state, used)) => {
                            self.state = state;
                            // Bytes of the head after the statement's start are the tuples'.
                            let rest = head[used..].to_vec();
                            if !rest.is_empty() {
                                self.values(&rest);
                            }
                            input = &input[take..];
                        }
                    }
                }
                State::Skip => match input.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.state = State::LineStart;
                        input = &input[i + 1..];
                    }
                    None => {
                        self.state = State::Skip;
                        return;
                    }
                },
                values @ State::Values { .. } => {
                    self.state = values;
                    let used = self.values(input);
                    input = &input[used..];
                }
            }
        }
    }
}

/// Passes a dump through unchanged, counting its rows on the way.
pub struct Counting<R> {
    inner: R,
    counter: Arc<Mutex<SqlRowCounter>>,
}

impl<R> Counting<R> {
    pub fn new(inner: R) -> (Self, Arc<Mutex<SqlRowCounter>>) {
        let counter = Arc::new(Mutex::new(SqlRowCounter::default()));
        (
            Self {
                inner,
                counter: counter.clone(),
            },
            counter,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled
            && let Ok(mut counter) = self.counter.lock()
        {
            counter.push(&buf.filled()[before..]);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "-- MariaDB dump 10.19\n--\n-- Table structure for table `a`\n--\n\n\
        DROP TABLE IF EXISTS `a`;\nCREATE TABLE `a` (\n  `id` int NOT NULL,\n  `v` text,\n  PRIMARY KEY (`id`)\n);\n\
        LOCK TABLES `a` WRITE;\nINSERT INTO `a` VALUES (1,'x'),(2,'it\\'s (not) a tuple; really'),(3,NULL);\n\
        INSERT INTO `a` VALUES (4,'line\\nbreak');\nUNLOCK TABLES;\n\
        CREATE TABLE `empty` (\n  `id` int\n);\n\
        CREATE TABLE `we``ird` (`id` int);\nINSERT INTO `we``ird` VALUES (1),(2);\n\
        /*!50001 CREATE VIEW `v` AS SELECT 1 AS `id` */;\n\
        INSERT INTO `a` (`id`) VALUES (9);\nINSERT INTO `a` VALUES\n(5),\n(6);\n";

    fn counted(chunks: &[&[u8]]) -> Vec<(String, i64)> {
        let mut c = SqlRowCounter::default();
        for chunk in chunks {
            c.push(chunk);
        }
        c.counts().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    #[test]
    fn rows_are_counted_per_table_however_the_dump_is_cut() {
        let want = vec![("a".to_owned(), 6), ("empty".to_owned(), 0), ("we`ird".to_owned(), 2)];
        let bytes = DUMP.as_bytes();
        assert_eq!(counted(&[bytes]), want);
        for cut in 0..bytes.len() {
            assert_eq!(counted(&[&bytes[..cut], &bytes[cut..]]), want, "cut at {cut}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(counted(&one_by_one), want);
    }
}
