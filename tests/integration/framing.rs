//! Properties of the line framer: how the bytes were split into reads never changes the lines.

use proptest::prelude::*;
use relayd::Framer;

/// Where each read ends when `data` is read in pieces cut at `cuts` (taken modulo its
/// length, in order), the last at its end.
fn read_ends(data: &[u8], cuts: &[usize]) -> Vec<usize> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    ends.sort();
    ends.push(data.len());
    ends
}

/// Feeds `data` to `framer` in pieces cut at `cuts`, calling `after_read` with where the read
/// ended, the lines so far and the too-long count so far after each one. Returns the lines
/// and the too-long count, or the first error `after_read` returned.
fn feed_in_pieces(
    framer: &mut Framer,
    data: &[u8],
    cuts: &[usize],
    mut after_read: impl FnMut(usize, &[u8], usize) -> Result<(), TestCaseError>,
) -> Result<(Vec<u8>, usize), TestCaseError> {
    let mut lines = Vec::new();
    let mut too_long = 0;
    let mut at = 0;
    for cut in read_ends(data, cuts) {
        too_long += framer.feed(&data[at..cut], &mut lines);
        at = cut;
        after_read(cut, &lines, too_long)?;
    }
    Ok((lines, too_long))
}

/// Frames `data` read in pieces cut at `cuts`, returning the lines and the too-long count.
fn frame(max_line: usize, data: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
    let mut framer = Framer::new(max_line);
    let (mut lines, too_long) = feed_in_pieces(&mut framer, data, cuts, |_, _, _| Ok(())).unwrap();
    framer.finish(&mut lines);
    (lines, too_long)
}

/// The framer's contract, written the obvious way: split at newlines, drop long lines.
fn reference(max_line: usize, data: &[u8]) -> (Vec<u8>, usize) {
    let mut lines = Vec::new();
    let mut too_long = 0;
    for piece in data.split_inclusive(|&b| b == b'\n') {
        let mut line = piece.to_vec();
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if line.len() > max_line {
            too_long += 1;
        } else {
            lines.extend(line);
        }
    }
    (lines, too_long)
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    // Mostly newlines and a few letters, so lines of every length near the limit occur.
    prop::collection::vec(
        prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r'), any::<u8>()],
        0..400,
    )
}

proptest! {
    #[test]
    fn any_split_gives_the_same_lines(data in stream(), cuts in prop::collection::vec(any::<usize>(), 0..20), max_line in 1usize..40) {
        prop_assert_eq!(frame(max_line, &data, &cuts), reference(max_line, &data));
    }
}

/// What the framer must have produced once `data[..end]` has been fed: the complete lines so
/// far (those over the limit dropped), and the too-long count, which also counts an unfinished
/// line already too long to ever fit (the framer reports it before its newline arrives).
fn reference_so_far(max_line: usize, data: &[u8], end: usize) -> (Vec<u8>, usize) {
    let fed = &data[..end];
    let complete = fed.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (lines, mut too_long) = reference(max_line, &fed[..complete]);
    // The unfinished tail would need one more byte for its newline.
    if fed.len() - complete >= max_line {
        too_long += 1;
    }
    (lines, too_long)
}

/// Any split into reads, the lines come out as soon as their newline is read, never later
/// (a framer that held lines back until the end of the stream passes the test above) and an
/// over-long line is reported once, as soon as it cannot fit.
fn check_incremental(max_line: usize, data: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let mut framer = Framer::new(max_line);
    feed_in_pieces(&mut framer, data, cuts, |cut, lines, too_long| {
        let (want, want_too_long) = reference_so_far(max_line, data, cut);
        prop_assert_eq!(lines, &want[..], "lines after {} bytes", cut);
        prop_assert_eq!(
            too_long,
            want_too_long,
            "too-long count after {} bytes",
            cut
        );
        Ok(())
    })?;
    Ok(())
}

/// Longer lines and limits than `stream`, where the limit falls inside a read more often.
fn long_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            1 => Just(b'\n'),
            30 => Just(b'x'),
            1 => any::<u8>(),
        ],
        0..4000,
    )
}

proptest! {
    #[test]
    fn lines_come_out_as_soon_as_they_are_complete(data in stream(), cuts in prop::collection::vec(any::<usize>(), 0..20), max_line in 1usize..40) {
        check_incremental(max_line, &data, &cuts)?;
    }

    #[test]
    fn long_lines_any_split_gives_the_same_lines(data in long_stream(), cuts in prop::collection::vec(any::<usize>(), 0..40), max_line in 1usize..600) {
        prop_assert_eq!(frame(max_line, &data, &cuts), reference(max_line, &data));
        check_incremental(max_line, &data, &cuts)?;
    }

    /// Arbitrary bytes, arbitrary limit (including 1: room for the newline only), arbitrary
    /// splits, `finish` and `drop_partial` at any point: no panic, and after `drop_partial`
    /// the framer starts clean, as a new one would.
    #[test]
    fn no_input_panics_and_drop_partial_starts_clean(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        rest in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        max_line in 1usize..100_000,
    ) {
        let mut framer = Framer::new(max_line);
        feed_in_pieces(&mut framer, &data, &cuts, |_, _, _| Ok(()))?;
        framer.drop_partial();
        let mut after = Vec::new();
        let too_long = framer.feed(&rest, &mut after);
        framer.finish(&mut after);
        let mut fresh = Framer::new(max_line);
        let mut want = Vec::new();
        let want_too_long = fresh.feed(&rest, &mut want);
        fresh.finish(&mut want);
        prop_assert_eq!((after, too_long), (want, want_too_long));
    }
}
