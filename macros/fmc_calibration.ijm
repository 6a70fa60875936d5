// fmc_calibration.ijm -- report the calibration of an image (or of every TIFF in a folder) as ImageJ sees it.
//
// Fiji / ImageJ 1:   Plugins > Macros > Run... (asks for a file), or
//   ImageJ -batch fmc_calibration.ijm "path=/data/image_0_nucleus_angle.tif"
//   ImageJ -batch fmc_calibration.ijm "path=/data/folder"
// Prints one line per image:
//   file=<name> width=<w> height=<h> slices=<z> channels=<c> frames=<t> bits=<b> voxel=<x>,<y>,<z> unit=<unit>
// fmc-ij's tests run this macro in the real ImageJ 1 to check that files written by fmc_ij.io carry the
// right calibration. No "#@" parameters: plain ImageJ 1 cannot parse them, so arguments come as key=value.

arg = getArgument();
path = call("ij.Macro.getValue", arg, "path", "");
if (path == "") path = arg;
if (path == "") path = File.openDialog("Choose an image");
setBatchMode(true);
if (File.isDirectory(path)) {
    if (!endsWith(path, File.separator)) path = path + File.separator;
    list = getFileList(path);
    for (i = 0; i < list.length; i++) {
        if (endsWith(toLowerCase(list[i]), ".tif") || endsWith(toLowerCase(list[i]), ".tiff"))
            report(path + list[i]);
    }
} else {
    report(path);
}

function report(file) {
    open(file);
    getVoxelSize(w, h, d, unit);
    getDimensions(width, height, channels, slices, frames);
    print("file=" + File.getName(file) + " width=" + width + " height=" + height + " slices=" + slices
        + " channels=" + channels + " frames=" + frames + " bits=" + bitDepth()
        + " voxel=" + d2s(w, 6) + "," + d2s(h, 6) + "," + d2s(d, 6) + " unit=" + unit);
    close();
}
