import CTaskHostPlugin
import Foundation
import TaskHostPlugins

/// What this build of TaskHost is: `taskhost --version` prints it and `taskhost_build_info`
/// carries it as labels.
///
/// The commit is not compiled in (a plain `swift build` in a fresh clone needs no git and no
/// build plugin): `scripts/install.sh` writes it to `lib/taskhost/BUILD` beside the installed
/// plugins, and the host reads that file at start; a build that was not installed says
/// `unknown`.
package struct BuildInfo: Sendable {
    package static let version = "0.14.0"
    /// The plugin ABI this host speaks: plugins built against `TH_ABI_MAJOR`.0 up to this minor load.
    package static let abi = "\(TH_ABI_MAJOR).\(TH_ABI_MINOR)"
    /// The Swift compiler that built this host.
    package static let swift: String = {
        #if compiler(>=6.5)
            return "6.5 or later"
        #elseif compiler(>=6.4)
            return "6.4"
        #elseif compiler(>=6.3)
            return "6.3"
        #elseif compiler(>=6.2)
            return "6.2"
        #elseif compiler(>=6.1)
            return "6.1"
        #else
            return "6.0"
        #endif
    }()
    /// The file the install script writes the commit to, in the installed library folder.
    package static let commitFileName = "BUILD"

    package var commit: String

    /// The commit read from `BUILD` in the installed library folder (or beside the executable).
    package static let current = BuildInfo(commit: readCommit(executableFolder: executableFolder()))

    package static func readCommit(executableFolder: String?) -> String {
        guard let folder = executableFolder else { return "unknown" }
        for candidate in [
            PluginLoader.installedLibraryFolder(executableFolder: folder) + "/" + commitFileName,
            folder + "/" + commitFileName,
        ] {
            guard let text = try? String(contentsOfFile: candidate, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("commit=") {
                let commit = line.dropFirst("commit=".count).trimmingCharacters(in: .whitespaces)
                if !commit.isEmpty { return commit }
            }
        }
        return "unknown"
    }

    /// The lines of `taskhost --version`.
    package var text: String {
        """
        taskhost \(Self.version)
        commit:     \(commit)
        plugin ABI: \(Self.abi)
        swift:      \(Self.swift)
        """
    }
}
