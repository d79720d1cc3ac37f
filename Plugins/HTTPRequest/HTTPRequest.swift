// The HTTP request executor: performs the request a task describes, against the server that is
// its target. The original design's API-client and scraping use case: with targetId = server,
// TaskHost never sends two requests to one server at once and keeps each server's order.
//
// Config:  {"baseURL": "https://api.example.com", "timeoutMs": 5000, "headers": {"Authorization": "..."},
//           "maxBodyBytes": 65536}
//          baseURL is optional: without it, a task's target id is the host ("api.example.com" or
//          "http://127.0.0.1:8080").
// Task:    {"method": "POST", "path": "/v1/items", "query": {"page": "2"}, "headers": {...}, "body": "..."}
//          or {"url": "https://..."}; a payload that is not JSON is a GET of the path it names.
// Result:  2xx -> success, the response body (up to maxBodyBytes) as output;
//          429 and 503 -> retryable, after Retry-After seconds when the server sends it;
//          other 5xx, timeouts and connection errors -> retryable; other 4xx -> permanent.
import Foundation
import TaskHostPluginSDK

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

struct HTTPRequest: TaskHostPlugin {
    struct Configuration: Decodable, Sendable {
        var baseURL: String?
        var timeoutMs: Int?
        var headers: [String: String]?
        var maxBodyBytes: Int?
    }

    struct Request: Decodable {
        var method: String?
        var url: String?
        var path: String?
        var query: [String: String]?
        var headers: [String: String]?
        var body: String?
    }

    static let name = "http-request"
    static let version = "1.0.0"
    static let summary: String? = "Performs the HTTP request a task describes against its target server."
    static let configSchema: String? = """
        {"type":"object","additionalProperties":false,"properties":{\
        "baseURL":{"type":"string","format":"uri"},"timeoutMs":{"type":"integer","minimum":1},\
        "headers":{"type":"object","additionalProperties":{"type":"string"}},\
        "maxBodyBytes":{"type":"integer","minimum":0}}}
        """

    let configuration: Configuration
    let session: URLSession

    static func validate(_ configuration: Configuration) throws {
        if let base = configuration.baseURL {
            guard let url = URL(string: base), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host != nil
            else {
                throw PluginExecutionError.invalidConfiguration(
                    "key 'baseURL': '\(base)' is not an http(s) URL; write it like \"https://api.example.com\"")
            }
        }
        if let timeout = configuration.timeoutMs, timeout <= 0 {
            throw PluginExecutionError.invalidConfiguration(
                "key 'timeoutMs': expected a positive number, got \(timeout)")
        }
    }

    init(configuration: Configuration, host: PluginHost) throws {
        self.configuration = configuration
        let session = URLSessionConfiguration.ephemeral
        session.timeoutIntervalForRequest = Double(configuration.timeoutMs ?? 30_000) / 1000
        session.httpAdditionalHeaders = configuration.headers
        self.session = URLSession(configuration: session)
    }

    func execute(_ task: PluginTask) async throws -> String? {
        let request = try makeRequest(task)
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw PluginExecutionError.retryable(
                "\(request.httpMethod ?? "GET") \(request.url?.absoluteString ?? ""): \(error.localizedDescription)")
        }
        guard let http = response as? HTTPURLResponse else {
            throw PluginExecutionError.permanent("not an HTTP response from \(request.url?.absoluteString ?? "")")
        }
        let body = String(decoding: data.prefix(configuration.maxBodyBytes ?? 65_536), as: UTF8.self)
        let summary = "\(request.httpMethod ?? "GET") \(request.url?.absoluteString ?? "") -> \(http.statusCode)"
        switch http.statusCode {
        case 200..<300:
            return body
        case 429, 503:
            let after = (http.value(forHTTPHeaderField: "Retry-After")).flatMap(Int.init).map { Duration.seconds($0) }
            throw PluginExecutionError.retryable("\(summary): \(body.prefix(200))", after: after)
        case 500..<600, 408:
            throw PluginExecutionError.retryable("\(summary): \(body.prefix(200))")
        default:
            throw PluginExecutionError.permanent("\(summary): \(body.prefix(200))")
        }
    }

    func makeRequest(_ task: PluginTask) throws -> URLRequest {
        let described: Request
        if let decoded = try? JSONDecoder().decode(Request.self, from: Data(task.payload.utf8)) {
            described = decoded
        } else {
            described = Request(path: task.payload)
        }
        var url: URL?
        if let absolute = described.url {
            url = URL(string: absolute)
        } else {
            var base = configuration.baseURL ?? task.targetId
            if !base.contains("://") { base = "https://" + base }
            let path = described.path ?? "/"
            url = URL(string: base.hasSuffix("/") && path.hasPrefix("/") ? String(base.dropLast()) + path : base + path)
        }
        if let query = described.query, let base = url,
            var components = URLComponents(url: base, resolvingAgainstBaseURL: false)
        {
            components.queryItems =
                (components.queryItems ?? [])
                + query.sorted { $0.key < $1.key }.map {
                    URLQueryItem(name: $0.key, value: $0.value)
                }
            url = components.url
        }
        guard let url, url.host != nil else {
            throw PluginExecutionError.permanent(
                "task \(task.sequence): no valid URL (give url, or path with a baseURL or a host target)")
        }
        var request = URLRequest(url: url)
        request.httpMethod = (described.method ?? (described.body == nil ? "GET" : "POST")).uppercased()
        for (name, value) in described.headers ?? [:] { request.setValue(value, forHTTPHeaderField: name) }
        request.setValue(task.id ?? "\(task.sequence)", forHTTPHeaderField: "X-TaskHost-Task")
        request.setValue(String(task.attempt), forHTTPHeaderField: "X-TaskHost-Attempt")
        if let body = described.body { request.httpBody = Data(body.utf8) }
        return request
    }
}

@_cdecl("taskhost_plugin_entry")
public func taskhostPluginEntry() -> UnsafeRawPointer { exportPlugin(HTTPRequest.self) }
