//! `project_ops`: the project operations (`Up`/`Down`) still running,
//! one per owner and workspace, kept until they end so that an agent
//! restarted midway runs them again.

use rusqlite::params;

use super::{Db, Result};
use crate::daemon::projects::Op;

impl Db {
    /// Records `op` on `workspace`, replacing the owner's earlier one there.
    pub fn put_project_op(&mut self, workspace: &str, op: &Op) -> Result<()> {
        let json = serde_json::to_string(op)?;
        self.conn.execute(
            "INSERT OR REPLACE INTO project_ops (owner, workspace, op) VALUES (?1, ?2, ?3)",
            params![op.owner, workspace, json],
        )?;
        Ok(())
    }

    pub fn delete_project_op(&mut self, owner: u32, workspace: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM project_ops WHERE owner = ?1 AND workspace = ?2",
            params![owner, workspace],
        )?;
        Ok(())
    }

    /// The operations recorded; one that cannot be read is dropped (and
    /// said so), not a reason to resume none.
    pub fn project_ops(&mut self) -> Result<Vec<Op>> {
        let mut stmt = self.conn.prepare("SELECT op FROM project_ops")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut ops = Vec::new();
        for json in rows {
            match serde_json::from_str(&json?) {
                Ok(op) => ops.push(op),
                Err(e) => tracing::warn!("dropping an unreadable project operation: {e}"),
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::projects::Kind;

    #[test]
    fn an_op_is_kept_until_deleted_and_replaced_per_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("c.db")).unwrap();
        let op = |kind, names: &[&str]| Op {
            kind,
            owner: 1000,
            file: "/p/corral.toml".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            env: vec![("PATH".into(), "/bin".into())],
            remove: false,
        };
        db.put_project_op("shop", &op(Kind::Up, &[])).unwrap();
        db.put_project_op("shop", &op(Kind::Down, &["api"]))
            .unwrap();
        db.put_project_op("other", &op(Kind::Up, &[])).unwrap();
        let mut ops = db.project_ops().unwrap();
        ops.sort_by_key(|o| o.names.len());
        assert_eq!(ops, vec![op(Kind::Up, &[]), op(Kind::Down, &["api"])]);
        db.delete_project_op(1000, "shop").unwrap();
        assert_eq!(db.project_ops().unwrap(), vec![op(Kind::Up, &[])]);
    }
}
