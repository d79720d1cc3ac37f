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
