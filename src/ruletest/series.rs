//! Input series, promtool's expanding notation: values separated by spaces; `a` one sample;
//! `axN` a repeated N+1 times; `a+bxN` / `a-bxN` N+1 samples from a in steps of b; `_` a
//! missing sample, `_xN` N+1 of them. Sample k is the value at step k; past the end a series
//! has no sample.
//!
//! Parsing must stay bounded: a repeat count above 100000 is refused, so a short string never
//! expands into gigabytes.

/// The largest `xN` repeat count of one token.
const MAX_REPEAT: usize = 100_000;

/// A parsed series: one optional sample per step.
pub(super) fn parse_series(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        let (head, times) = split_repeat(tok)?;
        if head == "_" {
            out.extend(std::iter::repeat_n(None, times.unwrap_or(0) + 1));
            continue;
        }
        let (a, b) = start_and_step(tok, head, times)?;
        for k in 0..=times.unwrap_or(0) {
            out.push(Some(a + b * k as f64));
        }
    }
    Ok(out)
}

/// `headxN` -> (head, Some(N)); a token without `x` -> (token, None).
fn split_repeat(tok: &str) -> Result<(&str, Option<usize>), String> {
    let Some((head, n)) = tok.split_once('x') else {
        return Ok((tok, None));
    };
    let n: usize = n
        .parse()
        .map_err(|_| format!("bad repeat count in {tok:?}; expected e.g. 90x10"))?;
    if n > MAX_REPEAT {
        return Err(format!(
            "repeat count {n} in {tok:?} is too large (at most 100000)"
        ));
    }
    Ok((head, Some(n)))
}

/// The start value and the step of `a`, `a+b` or `a-b` (a may itself be negative); a step
/// needs a repeat count.
fn start_and_step(tok: &str, head: &str, times: Option<usize>) -> Result<(f64, f64), String> {
    let split = head
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map(|(i, _)| i);
    let (a, b) = match split {
        Some(i) => (&head[..i], Some(&head[i..])),
        None => (head, None),
    };
    let a: f64 = a.parse().map_err(|_| {
        format!("bad value {a:?} in {tok:?}; expected a number, `_`, `axN` or `a+bxN`")
    })?;
    let b: f64 = match b {
        Some(b) => {
            if times.is_none() {
                return Err(format!("{tok:?} has a step but no `xN` count"));
            }
            b.parse()
                .map_err(|_| format!("bad step {b:?} in {tok:?}"))?
        }
        None => 0.0,
    };
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_notation() {
        assert_eq!(
            parse_series("1 2 3").unwrap(),
            vec![Some(1.0), Some(2.0), Some(3.0)]
        );
        assert_eq!(parse_series("90x2").unwrap(), vec![Some(90.0); 3]);
        assert_eq!(
            parse_series("10+5x2 _ _x1").unwrap(),
            vec![Some(10.0), Some(15.0), Some(20.0), None, None, None]
        );
        assert_eq!(
            parse_series("-1-1x2").unwrap(),
            vec![Some(-1.0), Some(-2.0), Some(-3.0)]
        );
        assert!(
            parse_series("abc")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_series("1+2").unwrap_err().contains("no `xN`"));
        assert!(parse_series("1x999999999").is_err());
    }
}
