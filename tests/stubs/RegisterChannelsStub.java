// Test stand-in for NanoJ-Core's "Register Channels - Estimate": registers the real command name, parses its
// options with ImageJ 1's own dialog code, logs them and shows the two images the real plugin shows.
import ij.*; import ij.gui.*; import ij.plugin.*; import ij.process.*;
public class RegisterChannelsStub implements PlugIn {
  public void run(String arg) {
    String opts = Macro.getOptions();
    for (String key : new String[]{"reference=", "number=", "max=", "blocks=", "min=", "gaussian=", "apply"}) {
      if (opts == null || !(" " + opts).contains(" " + key)) { IJ.log("STUB-MISSING " + key + " in: " + opts); return; }
    }
    ImagePlus imp = IJ.getImage();
    GenericDialog gd = new GenericDialog("Register Channels - Estimate");
    gd.addNumericField("Reference channel", 1, 0);
    gd.addNumericField("Number of channels", 2, 0);
    gd.addNumericField("Max expected drift", 0, 0);
    gd.addNumericField("Blocks per axis", 5, 0);
    gd.addNumericField("Min similarity", 0.5, 2);
    gd.addNumericField("Gaussian blur", 0, 0);
    gd.addCheckbox("Apply", false);
    gd.showDialog();
    if (gd.wasCanceled()) return;
    double ref = gd.getNextNumber(), n = gd.getNextNumber(), mx = gd.getNextNumber(), blocks = gd.getNextNumber();
    double min = gd.getNextNumber(), gauss = gd.getNextNumber(); boolean apply = gd.getNextBoolean();
    String rec = "reference=" + (int) ref + " number=" + (int) n + " max=" + (int) mx + " blocks=" + (int) blocks + " min=" + min + " gaussian=" + gauss + " apply=" + apply;
    System.setProperty("fmc.stub.Register Channels - Estimate", rec);
    IJ.log("stub " + rec);
    int w = imp.getWidth(), h = imp.getHeight();
    new ImagePlus(imp.getTitle() + " - TranslationMask", new FloatProcessor(2 * w, h)).show();
    if (apply) {
      ImageStack st = new ImageStack(w, h);
      st.addSlice(imp.getStack().getProcessor(1).duplicate());
      st.addSlice(imp.getStack().getProcessor(2).duplicate());
      new ImagePlus(imp.getTitle() + " - Registered", st).show();
    }
  }
}
