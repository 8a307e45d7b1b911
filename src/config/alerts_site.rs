//! The pieces of the site model alert delivery gets ([`crate::alerts::Site`]), taken from the
//! resolved configuration.

use super::Resolved;
use crate::alerts::Site;

impl<'a> From<&'a Resolved> for Site<'a> {
    fn from(cfg: &'a Resolved) -> Self {
        Site {
            identity: cfg.identity(),
            notifications: &cfg.notifications,
            receivers: &cfg.receivers,
            channels: &cfg.channels,
            group_areas: crate::rules::groups::groups(cfg)
                .into_iter()
                .map(|g| (g.channel, g.area))
                .collect(),
            // The texts the engine's views carry (built without an engine), so texts name
            // alarms exactly as the API does.
            alarms: crate::rules::engine::alarm_texts(cfg)
                .into_iter()
                .map(|v| (v.id, v.info))
                .collect(),
            journaled: cfg.alarms.journal_dir.is_some(),
        }
    }
}
