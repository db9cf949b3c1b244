// [auth] passwd_file: "user:hash" lines as mkpasswd, chpasswd-style tools and htpasswd -B write
// them (further ":"-separated fields are ignored; '#' starts a comment). Hashes are checked by the
// system's libcrypt (LibCrypt): yescrypt $y$, gost-yescrypt $gy$, scrypt $7$, SHA-512/256-crypt
// $6$/$5$, bcrypt $2b$/$2y$. A line libcrypt cannot use is reported and that user cannot log in;
// a file in which no line is usable is an error (InvalidDataException), so check-config and the
// start refuse it and a reload keeps the previous version.
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Auth;

internal sealed class PasswdFile
{
    // Checked for unknown users too, so a wrong name costs the same time as a wrong password
    // (mkpasswd -m yescrypt, libcrypt's default cost).
    private const string DummyHash = "$y$j9T$.mHIms.hGprnCcg524sS7.$BCRTEqrAgT/cnAuNaCT27hhTKfsvMI.bcn8/0BUb0wB";
    private readonly Dictionary<string, string> _users;

    private PasswdFile(Dictionary<string, string> users) => _users = users;

    public int Count => _users.Count;

    public static PasswdFile Parse(string text, string source)
    {
        var users = new Dictionary<string, string>(StringComparer.Ordinal);
        var problems = new List<string>();
        int lineNumber = 0;
        foreach (var rawLine in text.Split('\n'))
        {
            lineNumber++;
            var line = rawLine.TrimEnd('\r');
            if (line.Trim().Length == 0 || line.TrimStart()[0] == '#') continue;
            var fields = line.Split(':');
            if (fields.Length < 2 || fields[0].Length == 0)
            {
                problems.Add($"line {lineNumber}: expected user:hash");
                continue;
            }
            if (LibCrypt.Unusable(fields[1]) is { } why)
            {
                problems.Add($"line {lineNumber}: user {fields[0]} cannot log in: {why}");
                continue;
            }
            users.TryAdd(fields[0], fields[1]);
        }
        if (users.Count == 0)
        {
            var reasons = problems.Count == 0 ? "the file has no user:hash lines" : string.Join("; ", problems);
            throw new InvalidDataException($"no usable user:hash line, so nobody can log in ({reasons})");
        }
        foreach (var problem in problems) Log.Warn($"{source} {problem}; skipped");
        return new PasswdFile(users);
    }

    public static WatchedFile<PasswdFile> Watch(string path) =>
        new(path, (p, _) => Parse(FileText.Read(p), p), new PasswdFile([]), TimeSpan.Zero);

    public bool Verify(string user, string password)
    {
        if (!_users.TryGetValue(user, out var hash))
        {
            LibCrypt.Verify(password, DummyHash);
            return false;
        }
        return LibCrypt.Verify(password, hash);
    }
}
