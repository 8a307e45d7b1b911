//! Request planning: coalesce a device's points into as few reads as possible, within the
//! protocol limits (125 registers, 2000 bits) and the source's maximum gap. Points with
//! different poll intervals are planned separately ([`groups`]): one request never mixes
//! intervals, so a slow-polled counter never drags a fast-polled gas reading along.

use std::time::Duration;

use crate::config::{ResolvedPoint, Table};

/// One read request and the points it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// Table (function code).
    pub table: Table,
    /// First protocol address.
    pub start: u16,
    /// Number of registers or bits.
    pub count: u16,
    /// Indices into the device's point list.
    pub points: Vec<usize>,
}

/// Plans the reads for `points`. Points of one table are sorted by address and merged while the
/// request stays within the protocol limit and the gap to the next point is at most `max_gap`.
pub fn plan(points: &[ResolvedPoint], max_gap: u16) -> Vec<Read> {
    plan_subset(points, (0..points.len()).collect(), max_gap)
}

/// The points of one device that share a poll interval, and their reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollGroup {
    /// Poll interval of every point in the group.
    pub interval: Duration,
    /// Reads; their `points` index the device's full point list.
    pub reads: Vec<Read>,
}

/// Plans a device per poll interval, shortest interval first.
pub fn groups(points: &[ResolvedPoint], max_gap: u16) -> Vec<PollGroup> {
    let mut intervals: Vec<Duration> = points.iter().map(|p| p.poll_interval).collect();
    intervals.sort();
    intervals.dedup();
    intervals
        .into_iter()
        .map(|interval| PollGroup {
            interval,
            reads: plan_subset(
                points,
                (0..points.len())
                    .filter(|&i| points[i].poll_interval == interval)
                    .collect(),
                max_gap,
            ),
        })
        .collect()
}

fn plan_subset(points: &[ResolvedPoint], mut order: Vec<usize>, max_gap: u16) -> Vec<Read> {
    order.sort_by_key(|&i| (points[i].def.table, points[i].address));
    let mut reads: Vec<Read> = Vec::new();
    for i in order {
        let p = &points[i];
        let table = p.def.table;
        let start = u32::from(p.address);
        let end = start + u32::from(p.def.width()); // exclusive
        if let Some(last) = reads.last_mut() {
            let last_end = u32::from(last.start) + u32::from(last.count);
            let fits = last.table == table
                && start <= last_end + u32::from(max_gap)
                && end.max(last_end) - u32::from(last.start) <= u32::from(table.max_per_request());
            if fits {
                last.count =
                    u16::try_from(end.max(last_end) - u32::from(last.start)).unwrap_or(u16::MAX);
                last.points.push(i);
                continue;
            }
        }
        reads.push(Read {
            table,
            start: p.address,
            count: p.def.width(),
            points: vec![i],
        });
    }
    reads
}

/// Human-readable request plan of every source, for `hazgate plan`.
pub fn describe(cfg: &crate::config::Resolved) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for src in cfg.modbus() {
        let _ = writeln!(
            s,
            "source {} ({}, timeout {:?}, pause {:?}, max gap {})",
            src.id,
            src.link.describe(),
            src.timing.timeout,
            src.timing.pause,
            src.timing.max_gap
        );
        for d in &src.devices {
            let groups = groups(&d.points, src.timing.max_gap);
            let _ = writeln!(
                s,
                "  device {} unit {}: {} point(s) in {} request(s), {} interval group(s)",
                d.id,
                d.unit_id,
                d.points.len(),
                groups.iter().map(|g| g.reads.len()).sum::<usize>(),
                groups.len()
            );
            for g in &groups {
                let _ = writeln!(s, "    every {:?}:", g.interval);
                for r in &g.reads {
                    let names: Vec<String> = r
                        .points
                        .iter()
                        .map(|&i| format!("{}@{}", d.points[i].def.name, d.points[i].address))
                        .collect();
                    let _ = writeln!(
                        s,
                        "      {} {}..{} ({}): {}",
                        r.table.as_str(),
                        r.start,
                        u32::from(r.start) + u32::from(r.count) - 1,
                        r.count,
                        names.join(", ")
                    );
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteOrder, DataType, RegisterDef};
    use crate::model::ChannelId;

    fn pt(table: Table, address: u16, dt: DataType) -> ResolvedPoint {
        ResolvedPoint {
            channel: ChannelId::new(format!("a.d.p{address}")),
            address,
            poll_interval: Duration::from_secs(1),
            def: RegisterDef {
                name: format!("p{address}"),
                table,
                address,
                data_type: Some(dt),
                bit: if dt == DataType::Bool && !table.is_bits() {
                    Some(0)
                } else {
                    None
                },
                order: ByteOrder::ABCD,
                kind: None,
                unit: None,
                scale: None,
                offset: None,
                span: None,
                valid: None,
                fault_codes: vec![],
                states: Default::default(),
                decimals: None,
                range: None,
            },
        }
    }

    #[test]
    fn coalesces_within_gap_and_splits_tables() {
        let pts = vec![
            pt(Table::Holding, 10, DataType::F32),
            pt(Table::Holding, 0, DataType::U16),
            pt(Table::Holding, 40, DataType::U16),
            pt(Table::Input, 0, DataType::U16),
            pt(Table::Coil, 5, DataType::Bool),
            pt(Table::Coil, 1999, DataType::Bool),
            pt(Table::Coil, 2100, DataType::Bool),
        ];
        let reads = plan(&pts, 10);
        let summary: Vec<(Table, u16, u16)> =
            reads.iter().map(|r| (r.table, r.start, r.count)).collect();
        assert_eq!(
            summary,
            vec![
                (Table::Coil, 5, 1),
                (Table::Coil, 1999, 1),
                (Table::Coil, 2100, 1),
                (Table::Holding, 0, 12),
                (Table::Holding, 40, 1),
                (Table::Input, 0, 1),
            ]
        );
    }

    #[test]
    fn one_plan_per_interval_group() {
        let mut pts = vec![
            pt(Table::Holding, 0, DataType::U16),
            pt(Table::Holding, 1, DataType::U16),
            pt(Table::Holding, 2, DataType::U32),
            pt(Table::Holding, 4, DataType::U16),
        ];
        pts[2].poll_interval = Duration::from_secs(60);
        let g = groups(&pts, 10);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].interval, Duration::from_secs(1));
        let fast: Vec<(u16, u16, Vec<usize>)> = g[0]
            .reads
            .iter()
            .map(|r| (r.start, r.count, r.points.clone()))
            .collect();
        assert_eq!(fast, vec![(0, 5, vec![0, 1, 3])]);
        assert_eq!(g[1].interval, Duration::from_secs(60));
        assert_eq!(g[1].reads.len(), 1);
        assert_eq!((g[1].reads[0].start, g[1].reads[0].count), (2, 2));
        assert_eq!(g[1].reads[0].points, vec![2]);
        // Same interval everywhere: exactly the single-group plan.
        pts[2].poll_interval = Duration::from_secs(1);
        let g = groups(&pts, 10);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].reads, plan(&pts, 10));
    }

    #[test]
    fn respects_125_register_limit() {
        let pts: Vec<_> = (0..130)
            .map(|a| pt(Table::Input, a, DataType::U16))
            .collect();
        let reads = plan(&pts, 0);
        assert_eq!(reads.len(), 2);
        assert_eq!(reads[0].count, 125);
        assert_eq!(reads[1].start, 125);
        assert_eq!(reads[1].count, 5);
        // A multi-word value never straddles two requests.
        let pts: Vec<_> = (0..63)
            .map(|a| pt(Table::Input, a * 2, DataType::F32))
            .collect();
        let reads = plan(&pts, 0);
        assert!(reads.iter().all(|r| r.count <= 125 && r.count % 2 == 0));
    }
}
