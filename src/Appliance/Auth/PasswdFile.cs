// [auth] passwd_file: "user:hash" lines as htpasswd and chpasswd-style tools write them
// (further ":"-separated fields are ignored; '#' starts a comment). Hashes: SHA-512-crypt ($6$)
// and bcrypt ($2y$, $2b$, $2a$). Other kinds are reported when the file is read and never match.
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Auth;

internal sealed class PasswdFile
{
    // Checked for unknown users too, so a wrong name costs the same time as a wrong password.
    private const string DummyHash = "$6$portcullisdummy$vMhNYqCdZmVUHsvOKYRPqz5oKm5mLJ5Wn6zFk6Y1BTxrjV3nd1RRLq0xZdbPD3cHSySHqIhzjwEmcCcC/zVFX/";
    private readonly Dictionary<string, string> _users;

    private PasswdFile(Dictionary<string, string> users) => _users = users;

    public int Count => _users.Count;

    public static PasswdFile Parse(string text, string source)
    {
        var users = new Dictionary<string, string>(StringComparer.Ordinal);
        int lineNumber = 0;
        foreach (var rawLine in text.Split('\n'))
        {
            lineNumber++;
            var line = rawLine.TrimEnd('\r');
            if (line.Trim().Length == 0 || line.TrimStart()[0] == '#') continue;
            var fields = line.Split(':');
            if (fields.Length < 2 || fields[0].Length == 0)
            {
                Log.Warn($"{source} line {lineNumber}: expected user:hash; skipped");
                continue;
            }
            if (!ShaCrypt.IsShaCrypt(fields[1]) && !BCrypt.IsBCrypt(fields[1]))
                Log.Warn($"{source} line {lineNumber}: user {fields[0]} has a hash that is neither $6$ (SHA-512-crypt) nor $2y$/$2b$ (bcrypt); that user cannot log in");
            users.TryAdd(fields[0], fields[1]);
        }
        return new PasswdFile(users);
    }

    public static WatchedFile<PasswdFile> Watch(string path) =>
        new(path, (p, _) => Parse(FileText.Read(p), p), new PasswdFile([]), TimeSpan.Zero);

    public bool Verify(string user, string password)
    {
        if (!_users.TryGetValue(user, out var hash))
        {
            ShaCrypt.Verify(password, DummyHash);
            return false;
        }
        return ShaCrypt.IsShaCrypt(hash) ? ShaCrypt.Verify(password, hash)
            : BCrypt.IsBCrypt(hash) && BCrypt.Verify(password, hash);
    }
}
