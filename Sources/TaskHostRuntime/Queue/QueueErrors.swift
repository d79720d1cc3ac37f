import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostSources
import TaskHostStore

extension ConfigError {
    /// A queue that cannot be used, named in the configuration when `config` is given (the
    /// `queue` key), or by the queue file's path alone.
    init(_ error: QueueError, config: PipelineConfig? = nil) {
        if let config {
            self.init(
                file: config.file, line: config.queueLocation?.line, column: config.queueLocation?.column,
                key: "queue", message: "\(error.path): \(error.message)", hint: error.remedy)
        } else {
            self.init(file: error.path, line: nil, column: nil, key: "", message: error.message, hint: error.remedy)
        }
    }
}

extension ConfigError {
    /// `queue: { postgres: … }` runs (`taskhost run`, one host tested), but the operator's commands
    /// do not work on it yet.
    static func postgresNotYetRunnable(_ config: PipelineConfig) -> ConfigError {
        ConfigError(
            file: config.file, line: config.queueLocation?.line, column: config.queueLocation?.column,
            key: "queue.postgres",
            message:
                "the PostgreSQL queue is a preview: taskhost run works on it, but enqueue, status, targets and dead-letters do not yet",
            hint: "query the schema's tables with psql meanwhile; docs/operations.md, PostgreSQL (preview)")
    }
}
